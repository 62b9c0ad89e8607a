# Tessera developer commands. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: test lint fmt crds check-crds build

## Every test: unit, SQL integration against a PostgreSQL the tests start (Citus where
## installed), fixture tests, and the CRD drift check.
test: check-crds
	$(CARGO) test --workspace --all-targets

## Formatting and clippy with warnings as errors.
lint:
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

build:
	$(CARGO) build --workspace --release
