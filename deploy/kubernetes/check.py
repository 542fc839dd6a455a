#!/usr/bin/env python3
"""Checks the Kubernetes examples in deploy/kubernetes/ (`make deploy-lint`).

1. Every resource of a core kind validates strictly (unknown fields are
   errors) against the schemas bundled with kubernetes-validate, for the
   oldest Kubernetes the examples need (1.30: native sidecars and the preStop
   sleep action on by default) and the newest the tool bundles. A kind the
   tool has no schema for fails, except PodMonitor.
2. PodMonitor is a CRD (monitoring.coreos.com/v1): kubernetes-validate has no
   schema for it and would only warn. It is checked here against the part of
   the Prometheus Operator's CRD schema that the example uses (field names,
   types, the duration pattern, required fields), written down below; the
   full CRD schema is not bundled anywhere offline.
   PrometheusRule (same CRD group) likewise; its groups must equal
   deploy/prometheus/slotproxy-rules.yaml, which promtool checks and
   unit-tests (make deploy-lint).
3. What no schema can see: probes hit /healthz and /readyz on the admin port
   of the mounted configuration, the Prometheus annotations and the
   PodMonitor point at it, the sidecar listens on 127.0.0.1:6379, every file
   the configuration names is on a mounted volume, the grace period covers
   preStop + frontend.drain_timeout, the pods run as the image's user and
   mount no service account token, and a NetworkPolicy opens the admin port
   of every slotproxy pod to a namespace (Prometheus's) rather than to all.

Exits 1 on any problem, listing all of them.
"""

import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Oldest supported and newest bundled (the newest moves with the tool's version,
# pinned in deploy/local/ensure-test-deps.sh).
VERSIONS = ["1.30.0", kv.latest_version()]
CONFIG_DIR = "/etc/slotproxy"
CONFIG_KEY = "slotproxy.toml"

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
# The subset of monitoring.coreos.com/v1 PodMonitor that the example uses.
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}

# The subset of monitoring.coreos.com/v1 PrometheusRule that the example uses.
PROMETHEUSRULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": PODMONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
RULES_FILE = ROOT / "deploy/prometheus/slotproxy-rules.yaml"

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def duration_seconds(text):
    """A humantime duration as slotproxy's config writes them ("10s", "500ms", "1m")."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*(ms|s|m|h)", text):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def image_user():
    """USER of the runtime stage of deploy/docker/Dockerfile, as uid."""
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "deploy/docker/Dockerfile").read_text(), re.M)
    return int(users[-1].split(":")[0]) if users else None


def validate_core(path, doc):
    where = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
    before = len(problems)
    for version in VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            field = ".".join(str(p) for p in e.path)
            problem(where, f"Kubernetes {version}: {field}: {e.message}")
        except kv.SchemaNotFoundError as e:
            problem(where, e.message)
    if len(problems) == before:
        print(f"validated {where} against Kubernetes {', '.join(VERSIONS)} (strict)")


def check_podmonitor(path, doc):
    where = f"{path.name}: PodMonitor/{doc.get('metadata', {}).get('name')}"
    before = len(problems)
    for e in jsonschema.Draft202012Validator(PODMONITOR_SCHEMA).iter_errors(doc):
        problem(where, f"{'.'.join(str(p) for p in e.path)}: {e.message}")
    if len(problems) == before:
        print(f"checked {where} against the PodMonitor CRD subset")


def check_prometheusrule(path, doc):
    where = f"{path.name}: PrometheusRule/{doc.get('metadata', {}).get('name')}"
    before = len(problems)
    for e in jsonschema.Draft202012Validator(PROMETHEUSRULE_SCHEMA).iter_errors(doc):
        problem(where, f"{'.'.join(str(p) for p in e.path)}: {e.message}")
    rules = yaml.safe_load(RULES_FILE.read_text())
    if doc.get("spec", {}).get("groups") != rules.get("groups"):
        problem(where, f"spec.groups differ from {RULES_FILE.relative_to(ROOT)}")
    if len(problems) == before:
        print(f"checked {where} against the PrometheusRule CRD subset and {RULES_FILE.name}")


def check_admin_policy(deployment, labels, ports, policies):
    """Some NetworkPolicy selects the pod and opens its admin port to a namespace only."""
    # A policy names the port by name or by number.
    admin = {"slotproxy-admin", ports.get("slotproxy-admin")}
    for path, policy in policies:
        spec = policy["spec"]
        selector = spec.get("podSelector", {}).get("matchLabels", {})
        if not all(labels.get(k) == v for k, v in selector.items()):
            continue
        for rule in spec.get("ingress", []):
            if not any(p.get("port") in admin for p in rule.get("ports", [])):
                continue
            sources = rule.get("from", [])
            if not sources:
                problem(f"{path.name}: NetworkPolicy/{policy['metadata']['name']}", "opens the admin port to everyone")
            elif all("namespaceSelector" in f and "podSelector" not in f for f in sources):
                print(f"cross-checked {deployment}: admin port open to a namespace only")
                return
    problem(deployment, "no NetworkPolicy opens its admin port (slotproxy-admin) to a namespace only")


def check_slotproxy_pod(path, deploy, configmaps):
    """Cross-checks one Deployment whose pod runs slotproxy."""
    name = deploy["metadata"]["name"]
    where = f"{path.name}: Deployment/{name}"
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c.get("name") == "slotproxy"]
    mains = [c for c in spec.get("containers", []) if c.get("name") == "slotproxy"]
    proxy = (sidecars + mains)[0]
    if sidecars and sidecars[0].get("restartPolicy") != "Always":
        problem(where, "slotproxy as an init container needs restartPolicy: Always (native sidecar)")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: volumes.get(m["name"]) for m in proxy.get("volumeMounts", [])}
    config_volume = mounts.get(CONFIG_DIR)
    if not config_volume or "configMap" not in config_volume:
        problem(where, f"no ConfigMap mounted at {CONFIG_DIR} (the image reads {CONFIG_DIR}/{CONFIG_KEY})")
        return
    cm = configmaps.get(config_volume["configMap"]["name"])
    if cm is None or CONFIG_KEY not in cm.get("data", {}):
        problem(where, f"ConfigMap {config_volume['configMap']['name']} with key {CONFIG_KEY} not in {path.name}")
        return
    try:
        config = tomllib.loads(cm["data"][CONFIG_KEY])
    except tomllib.TOMLDecodeError as e:
        problem(where, f"{CONFIG_KEY} is not valid TOML: {e}")
        return

    frontend = config.get("frontend", {})
    listen = frontend.get("listen", "127.0.0.1:6379")
    if sidecars and listen != "127.0.0.1:6379":
        problem(where, f"the sidecar should listen on 127.0.0.1:6379, not {listen}")
    admin = config.get("admin", {}).get("listen")
    if not admin:
        problem(where, "admin.listen is not set: no probes, no metrics")
        return
    admin_port = port_of(admin)
    if not admin.startswith(("0.0.0.0:", "[::]:")):
        problem(where, f"admin.listen {admin} is not reachable by the kubelet and Prometheus (use 0.0.0.0)")

    ports = {p.get("name"): p["containerPort"] for p in proxy.get("ports", [])}
    if not any(port == admin_port for port in ports.values()):
        problem(where, f"no container port {admin_port} (admin.listen)")
    if not sidecars and port_of(listen) not in ports.values():
        problem(where, f"no container port {port_of(listen)} (frontend.listen)")

    for probe, want in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = proxy.get(probe, {}).get("httpGet")
        if not get:
            problem(where, f"slotproxy has no {probe} with httpGet")
            continue
        if get.get("path") != want:
            problem(where, f"{probe} asks {get.get('path')}, expected {want}")
        port = get.get("port")
        if ports.get(port, port) != admin_port:
            problem(where, f"{probe} port {port} is not the admin port {admin_port}")

    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true":
        if annotations.get("prometheus.io/port") != str(admin_port):
            problem(where, f"prometheus.io/port is not the admin port {admin_port}")
        if annotations.get("prometheus.io/path", "/metrics") != "/metrics":
            problem(where, "prometheus.io/path is not /metrics")

    # Every file the configuration names must be on a mounted volume.
    def files(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from files(v, f"{key}.{k}" if key else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from files(v, f"{key}[{i}]")
        elif key.endswith("_file"):
            yield key, node

    for key, file in files(config):
        if not any(file.startswith(m.rstrip("/") + "/") for m in mounts):
            problem(where, f"{key} = {file} is on no volume mounted in the slotproxy container")

    # Drain: SIGTERM comes after preStop; the drain must end before SIGKILL.
    drain = duration_seconds(frontend.get("drain_timeout", "10s"))
    pre_stop = proxy.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= pre_stop + drain:
        problem(where, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} s + drain_timeout {drain:g} s")
    if mains and pre_stop == 0:
        problem(where, "a shared proxy needs a preStop sleep so endpoints are removed before the drain")

    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken is not false (slotproxy needs no API token)")

    uid = image_user()
    run_as = proxy.get("securityContext", {}).get("runAsUser", spec.get("securityContext", {}).get("runAsUser"))
    if run_as is not None and run_as != uid:
        problem(where, f"runAsUser {run_as} differs from the image's USER {uid}")
    if not (spec.get("securityContext", {}).get("runAsNonRoot") or proxy.get("securityContext", {}).get("runAsNonRoot")):
        problem(where, "runAsNonRoot is not set")
    print(f"cross-checked {where}: admin port {admin_port}, grace {grace} s > preStop {pre_stop} s + drain {drain:g} s")
    return pod["metadata"].get("labels", {}), ports


def main():
    docs = []
    for path in sorted(HERE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    configmaps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    pods = []
    monitors = []
    policies = []
    for path, doc in docs:
        if doc.get("kind") == "PodMonitor":
            check_podmonitor(path, doc)
            monitors.append((path, doc))
            continue
        if doc.get("kind") == "PrometheusRule":
            check_prometheusrule(path, doc)
            continue
        if doc.get("kind") == "NetworkPolicy":
            policies.append((path, doc))
        validate_core(path, doc)
        if doc["kind"] == "Deployment":
            spec = doc["spec"]["template"]["spec"]
            if any(c.get("name") == "slotproxy" for c in spec.get("initContainers", []) + spec.get("containers", [])):
                pod = check_slotproxy_pod(path, doc, configmaps)
                if pod:
                    pods.append((f"{path.name}: Deployment/{doc['metadata']['name']}", *pod))
    if not pods:
        problem("deploy/kubernetes", "no Deployment runs a container named slotproxy")
    for deployment, labels, ports in pods:
        check_admin_policy(deployment, labels, ports, policies)
    for path, monitor in monitors:
        where = f"{path.name}: PodMonitor/{monitor['metadata']['name']}"
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        for deployment, labels, ports in pods:
            if not all(labels.get(k) == v for k, v in selector.items()):
                problem(where, f"does not select the pods of {deployment}")
                continue
            for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
                if endpoint.get("port") not in ports:
                    problem(where, f"port {endpoint.get('port')} is not a named port of slotproxy in {deployment}")
                if endpoint.get("path", "/metrics") != "/metrics":
                    problem(where, "path is not /metrics")
    if problems:
        print(f"deploy/kubernetes: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"deploy/kubernetes: {len(docs)} resources OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
