# slotproxy developer entry points. `make run` and `make test` are all a fresh
# machine needs: they install redis-server with apt-get when it is missing.
.PHONY: help run stop test test-deps lint bench build clean

help:
	@echo "make run    start a local 6-node Redis Cluster and slotproxy on 127.0.0.1:6380"
	@echo "make stop   stop the local cluster"
	@echo "make test   install test dependencies, run unit, property and integration tests"
	@echo "make lint   rustfmt --check and clippy -D warnings"
	@echo "make bench  direct cluster vs slotproxy side by side (writes docs/benchmarks.md)"
	@echo "make build  release build"

run:
	deploy/local/run.sh

stop:
	deploy/local/cluster.sh stop

test-deps:
	deploy/local/ensure-test-deps.sh

test: test-deps
	cargo test --doc
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench:
	deploy/local/ensure-redis.sh
	deploy/bench/bench.sh

build:
	cargo build --release

clean:
	cargo clean
