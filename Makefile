# Tessera developer commands. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: test lint fmt crds check-crds manifests check-manifests image build demo demo-stop bench bench-operator bench-moves bench-tenant-stats prerequisites-test prerequisites-demo prerequisites-lint

## Every test: unit, SQL integration against a PostgreSQL the tests start (Citus where
## installed), fixture tests, the chart's tests, and the CRD and manifests drift checks.
test: prerequisites-test
	$(MAKE) --no-print-directory check-crds check-manifests
	$(CARGO) test --workspace --all-targets

## What each command needs from the machine: installed where possible, else named before any build.
prerequisites-test prerequisites-demo prerequisites-lint: prerequisites-%:
	@./scripts/prerequisites $*

## Formatting and clippy with warnings as errors.
lint: prerequisites-lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate crds/ from the Rust types.
crds:
	$(CARGO) run -q --bin crdgen

## Fail when crds/ differs from the Rust types.
check-crds:
	$(CARGO) run -q --bin crdgen -- --check

## Render manifests/install.yaml from the Helm chart (helm built by the e2e tools).
manifests:
	$(CARGO) run -q -p tessera-release -- manifests

## Fail when manifests/install.yaml differs from the chart.
check-manifests:
	$(CARGO) run -q -p tessera-release -- manifests --check

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE ?= tessera/operator:$(VERSION)
IMAGE_ARCHIVE ?= target/image/tessera-operator-$(VERSION).tar
## The operator image as an archive, without a container engine (`kind load image-archive`,
## `docker load`), checked with go-containerregistry.
image:
	$(CARGO) build -q --profile dist -p tessera-operator --bin operator
	$(CARGO) run -q -p tessera-release --bin image-archive -- target/dist/operator $(IMAGE_ARCHIVE) $(IMAGE)
	$(CARGO) run -q -p tessera-release -- check-image $(IMAGE_ARCHIVE)

build:
	$(CARGO) build --workspace --release

DEMO_DIR ?= /tmp/tessera-demo

## A real control plane on loopback, a coordinator pod (PostgreSQL, with Citus where installed),
## the operator and the three example services; left running until `make demo-stop`.
demo: prerequisites-demo
	$(CARGO) build -q -p tessera-e2e -p tessera-operator
	./target/debug/tessera-e2e demo $(DEMO_DIR)

demo-stop:
	$(CARGO) build -q -p tessera-e2e
	./target/debug/tessera-e2e down $(DEMO_DIR)

## Benchmarks that print figures (release build).
bench:
	$(CARGO) run -q --release -p tessera-bench --bin user-service-bench -- $(BENCH_ARGS)

SERVICES ?= 100,1000
## The operator at scale: a real control plane and database, the operator as it ships, N
## Microservices at once; figures for provisioning, the steady state and a restart.
bench-operator:
	$(CARGO) run -q --release -p tessera-bench --bin bench-operator -- --services $(SERVICES) $(BENCH_OPERATOR_ARGS)

## Shard moves on scale-out and scale-in (Citus needed): one at a time and side by side,
## Tessera's reconciler against the same moves typed by hand on the same cluster.
bench-moves:
	$(CARGO) run -q --release -p tessera-bench --bin bench-moves -- $(BENCH_MOVES_ARGS)

## What Citus's tenant statistics (service load) cost the services (Citus needed): pgbench
## with them off and on, in turns, and Tessera's reading of them.
bench-tenant-stats:
	$(CARGO) run -q --release -p tessera-bench --bin bench-tenant-stats -- $(BENCH_TENANT_STATS_ARGS)
