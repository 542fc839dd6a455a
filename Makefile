# slotproxy developer entry points. `make run` and `make test` are all a fresh
# machine needs: they install redis-server with apt-get when it is missing.
.PHONY: help run stop test test-deps deploy-lint lint bench microbench profile fuzz build image clean

help:
	@echo "make run    start a local 6-node Redis Cluster and slotproxy on 127.0.0.1:6380"
	@echo "make stop   stop the local cluster"
	@echo "make test   install test dependencies, run unit, property and integration tests (Redis, then the cluster-facing ones on Valkey) and deploy-lint"
	@echo "make deploy-lint  hadolint the Dockerfile, validate the Kubernetes manifests, the alerting rules and the systemd unit"
	@echo "make lint   module graph (no import cycle, no file over 800 lines), rustfmt --check and clippy -D warnings, the fuzz targets included"
	@echo "make bench  direct cluster vs slotproxy, then slotproxy vs predixy (PREDIXY=path) and the floor (writes docs/benchmarks.md; BENCH_ONLY=peer or migration: that block alone)"
	@echo "make microbench  criterion micro-benchmarks: codec, slot hashing, fan-out"
	@echo "make profile  perf profile of the proxy under redis-benchmark GET -P 16 load"
	@echo "make fuzz   run the cargo-fuzz targets (FUZZ_SECONDS each, default 60)"
	@echo "make build  release build"
	@echo "make image  container image slotproxy:dev (needs a Docker engine; not part of test)"

run:
	deploy/local/run.sh

stop:
	deploy/local/cluster.sh stop

test-deps:
	deploy/local/ensure-test-deps.sh

# The cluster-facing integration tests, run a second time against Valkey
# (SLOTPROXY_TEST_SERVER=valkey; the rest of the suite runs against Redis).
VALKEY_TESTS = --test harness --test topology --test chaos --test session --test fanout --test clients \
	--test proxy --test redis_py --test zones

# deploy-lint first: it takes seconds, and the test runner's summary stays
# the last thing printed.
test: test-deps
	$(MAKE) --no-print-directory deploy-lint
	cargo test --doc
	cargo test --all-targets
	SLOTPROXY_TEST_SERVER=valkey cargo test $(VALKEY_TESTS)

# Static checks of deploy/ (the dashboard is checked by tests/deploy.rs): the
# Dockerfile, the Kubernetes manifests, the alerting rules (checked, and
# unit-tested with promtool), the systemd unit.
# The installs are in test-deps; call `make test-deps` first when running
# this alone on a fresh machine.
deploy-lint:
	hadolint deploy/docker/Dockerfile
	@echo "hadolint deploy/docker/Dockerfile: OK"
	python3 deploy/kubernetes/check.py
	promtool check rules deploy/prometheus/slotproxy-rules.yaml
	cd deploy/prometheus && promtool test rules slotproxy-rules.test.yaml
	@if command -v systemd-analyze >/dev/null 2>&1; then \
		out="$$(systemd-analyze verify deploy/systemd/slotproxy.service 2>&1 | grep -v 'slotproxy is not executable' || true)"; \
		if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; \
		echo "systemd-analyze verify deploy/systemd/slotproxy.service: OK"; \
	else \
		echo "systemd-analyze not found: deploy/systemd/slotproxy.service not verified"; \
	fi

# The module check fails on an import cycle between modules of src/ or a file
# over 800 lines. The fuzz targets are their own workspace, which make test
# does not build: lint keeps them compiling (a field's type change once broke
# one unnoticed).
lint:
	python3 deploy/lint/modules.py src 800
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --manifest-path fuzz/Cargo.toml --bins -- -D warnings

bench:
	deploy/local/ensure-redis.sh
	deploy/bench/bench.sh

# Criterion benches in benches/; the summary table goes into docs/benchmarks.md.
microbench:
	cargo bench --bench codec --bench slot --bench fanout
	python3 deploy/bench/criterion_summary.py

profile:
	deploy/local/ensure-redis.sh
	deploy/bench/profile.sh

FUZZ_SECONDS ?= 60
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	for t in request_decoder reply_decoder router_merge; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

build:
	cargo build --release

image:
	docker build -f deploy/docker/Dockerfile -t slotproxy:dev .

clean:
	cargo clean
