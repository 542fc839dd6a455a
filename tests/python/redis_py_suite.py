#!/usr/bin/env python3
"""Runs redis-py's own test suite (from its sdist) against a server, and
compares its failures with an expected-failures file.

Every entry of the file is one test id with the reason it fails through the
proxy, `tests/x.py::Class::test_name  # reason`; an entry may name the one
protocol it fails with, `tests/x.py::Class::test_name [resp2]  # reason`,
and the one server kind behind the proxy, `[redis]` or `[valkey]` (both
tags may be given).
The run fails when a test outside the file fails (a regression) or an entry
has no reason; it prints every listed test that passed, so the file is
pruned. A test that fails unexpectedly runs once more on its own; if it
passes then, it is reported as flaky and does not fail the run.

usage: redis_py_suite.py --suite DIR --url redis://HOST:PORT/0 --protocol 2|3
                         --expected FILE [--server redis|valkey] [--junit FILE]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# The files and markers the fidelity work measures (issue 19).
FILES = [
    "tests/test_commands.py",
    "tests/test_pipeline.py",
    "tests/test_scripting.py",
    "tests/test_function.py",
    "tests/test_pubsub.py",
    "tests/test_lock.py",
    "tests/test_encoding.py",
    "tests/test_monitor.py",
]
MARKERS = "not onlycluster and not redismod and not replica and not ssl"


def expected_failures(path, protocol, server="redis"):
    """{test id: reason} for this protocol and server; problems with the file."""
    entries, problems = {}, []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test, _, reason = line.partition("#")
        test, reason = test.strip(), reason.strip()
        if not reason:
            problems.append(f"{path}:{n}: no reason given for {test}")
        m = re.fullmatch(r"(\S+)((?:\s+\[(?:resp[23]|redis|valkey)\])*)", test)
        if not m:
            problems.append(f"{path}:{n}: not a test id: {test!r}")
            continue
        tags = re.findall(r"\[(\w+)\]", m.group(2))
        protocols = [t for t in tags if t.startswith("resp")]
        servers = [t for t in tags if not t.startswith("resp")]
        if (not protocols or f"resp{protocol}" in protocols) and (not servers or server in servers):
            entries[m.group(1)] = reason
    return entries, problems


def results(junit):
    """{test id: passed?} from pytest's JUnit XML (skipped tests left out)."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        parts = case.get("classname", "").split(".")
        test = "/".join(parts[:2]) + ".py::" + "::".join(parts[2:] + [case.get("name")])
        if case.find("skipped") is not None:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        out[test] = out.get(test, True) and not failed
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--protocol", required=True, choices=["2", "3"])
    ap.add_argument("--expected", required=True)
    ap.add_argument("--server", default="redis", choices=["redis", "valkey"])
    ap.add_argument("--junit")
    a = ap.parse_args()
    expected, problems = expected_failures(a.expected, a.protocol, a.server)
    with tempfile.TemporaryDirectory(prefix="redis-py-") as tmp:
        return check(a, expected, problems, a.junit or os.path.join(tmp, "junit.xml"))


def check(a, expected, problems, junit):
    """Runs the suite, compares, reports; the exit status."""
    def pytest(tests, junit):
        cmd = [
            sys.executable, "-m", "pytest", *tests,
            f"--redis-url={a.url}", f"--protocol={a.protocol}", "-m", MARKERS,
            "-p", "no:cacheprovider", "-o", "addopts=", "--timeout=30",
            "-q", "--tb=line", f"--junitxml={junit}",
        ]
        # A hung test is bounded by --timeout; the whole run by this.
        return subprocess.run(cmd, cwd=a.suite, capture_output=True, text=True, timeout=900)

    run = pytest(FILES, junit)
    if not os.path.exists(junit):
        print(run.stdout[-5000:], run.stderr[-5000:], sep="\n")
        print("redis-py suite: pytest wrote no results")
        return 1
    got = results(junit)
    passed = sorted(t for t, ok in got.items() if ok)
    failed = sorted(t for t, ok in got.items() if not ok)
    regressions = [t for t in failed if t not in expected]
    flaky = []
    if regressions:
        again = junit + ".again.xml"
        pytest(regressions, again)
        passed_again = {t for t, ok in results(again).items() if ok} if os.path.exists(again) else set()
        flaky = [t for t in regressions if t in passed_again]
        regressions = [t for t in regressions if t not in passed_again]
    pruned = [t for t in passed if t in expected]
    print(f"redis-py suite, RESP{a.protocol}, {a.server}: {len(passed)} passed, {len(failed)} failed "
          f"({len(failed) - len(regressions)} expected)")
    for t in pruned:
        print(f"  now passes, remove it from {os.path.basename(a.expected)}: {t}")
    for t in flaky:
        print(f"  flaky: failed, then passed on its own: {t}")
    for p in problems:
        print(f"  {p}")
    if regressions:
        lines = {l.split(" ")[0]: l for l in run.stdout.splitlines() if "::" in l}
        print(f"  failed, and not expected to ({len(regressions)}):")
        for t in regressions:
            print(f"    {t}")
        # pytest's one-line reasons, for the log.
        print("\n".join(l for l in run.stdout.splitlines() if l.startswith("/") or "Error" in l)[-8000:])
    return 1 if regressions or problems else 0


if __name__ == "__main__":
    sys.exit(main())
