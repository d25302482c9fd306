# raftkine: the two commands of README.md, plus the checks CI runs.
#   make run    single node, data in ./raftkine-data, etcd API on 127.0.0.1:2379
#   make test   the whole test suite (unit, integration, conformance against etcd 3.4)

CARGO ?= cargo
DATA_DIR ?= ./raftkine-data
LISTEN ?= tcp://127.0.0.1:2379

.PHONY: run test check etcd bench build profile

build:
	$(CARGO) build --release --bin raftkine

run: build
	./target/release/raftkine serve --storage-dir $(DATA_DIR) --listen $(LISTEN)

# Debian's etcd 3.4 is the oracle of the conformance suite and some tests.
etcd:
	@if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then \
		echo "installing Debian's etcd-server and etcd-client"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client; \
	fi
	@# The package may start an etcd service on 2379; the tests use their own ports, stop it anyway.
	@-service etcd stop >/dev/null 2>&1 || true

test: etcd
	$(CARGO) build --bin raftkine
	$(CARGO) test --workspace --all-targets

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# raftkine and etcd side by side (A B A B, 3 rounds); BENCH_QUICK=1 for a short run,
# BENCH_NODES=3 for 3-member clusters. Results in bench/results/latest.{md,json}.
# (the driver builds the release raftkine itself)
bench: etcd
	$(CARGO) build --release -p raftkine-bench
	./target/release/raftkine-bench compare

# Whose code a single-node raftkine's CPU goes to during one scenario (needs perf and python3):
#   make profile ARGS="put --val-size 256 --total 60000 --conns 100 --clients 1000"
profile:
	$(CARGO) build --release --bins -p raftkine -p raftkine-bench
	bench/profile/profile.sh $(ARGS)
