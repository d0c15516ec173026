# pixmesh — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos/pixmesh -name '*.proto' | sort)

.PHONY: install browser up up-cluster down test test-unit lint sdk sdk-check docs docs-check proto proto-check proto-lint descriptor clean

# Create the virtualenv and install both distributions, editable, pinned by constraints.txt: the
# SDK + CLI (`pixmesh`, pyproject.toml) with the dev tools, and the services with every server
# binary (`pixmesh-server`, services/pyproject.toml).
$(STAMP): pyproject.toml services/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]' -e './services[servers]'
	touch $(STAMP)

install: $(STAMP)

# The web console's browser tests (tests/console) drive Debian's chromium + chromium-driver:
# installed with apt when missing (as root, or with password-less sudo). Where that fails the
# tests skip with a loud message (and fail under CI=true).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null || \
		echo "WARNING: could not install chromium + chromium-driver; the console's browser tests will not run" >&2; }

# Run the whole mesh on loopback (embedded servers, no Docker). Ctrl-C stops everything.
up: install
	$(PY) -m deploy.local up

# The same with a 3-node NATS JetStream cluster (R3 streams) and two replicas of each service
# (one of inference) behind Envoy. `python -m deploy.local kill imaging-2` (or nats-2, ...) from
# another terminal kills one; this one starts it again.
up-cluster: install
	$(PY) -m deploy.local up --cluster

# Stop a mesh started by `make up` or `make up-cluster` in another terminal.
down:
	@test -x $(PY) && $(PY) -m deploy.local down || true

# CI runs this (.ci/run): the contract and lint checks first, then every test.
test: install lint browser
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m "not integration"

lint: install proto-check proto-lint sdk-check docs-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check services pixmesh deploy tests bench
	$(VENV)/bin/mypy services pixmesh deploy/local deploy/observability deploy/envoy deploy/k8s

# The synchronous client, pixmesh/client.py, is generated from the asyncio one (pixmesh/aio.py).
sdk: install
	$(PY) -m pixmesh._unasync

sdk-check: install
	$(PY) -m pixmesh._unasync --check

# README's Operations table and docs/operations.md, generated from operations.proto (its comments,
# `Example: ` lines and buf.validate rules, through pixmesh/rules.py).
docs: install
	$(PY) -m pixmesh._opdocs

docs-check: install
	$(PY) -m pixmesh._opdocs --check

# Regenerate Python stubs and the Envoy descriptor set from protos/.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos --python_out=$(1) --grpc_python_out=$(1) \
	--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	--mypy_opt=quiet --mypy_grpc_opt=quiet --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTO_FILES)
GENERATED_DIRS := common gateway jobs imaging inference metadata events
# operations.proto with its comments (source info): the descriptions that pixmesh/rules.py gives
# ListOperations, the SDK builders and the CLI; the generated _pb2 modules carry no comments.
OPERATION_DOCS = $(PY) -m grpc_tools.protoc -Iprotos --include_source_info \
	--descriptor_set_out=$(1)/pixmesh/common/v1/operations.binpb protos/pixmesh/common/v1/operations.proto

proto: install
	cd pixmesh && rm -rf $(GENERATED_DIRS)
	$(call PROTOC,.)
	$(call OPERATION_DOCS,.)
	find pixmesh -mindepth 1 -type d -not -name __pycache__ -exec touch {}/__init__.py \;
	$(MAKE) -s descriptor

# The descriptor set and every Envoy config generated from it (compose, Kubernetes).
descriptor:
	$(VENV)/bin/buf build -o deploy/envoy/pixmesh.pb
	$(PY) -m deploy.envoy.config --compose --out deploy/compose/envoy.json
	$(PY) -m deploy.k8s.sync

# Fails when the committed generated code differs from what protos/ produce (generates into a
# temporary folder; the tree is not touched).
proto-check: install
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(call PROTOC,$$tmp) && \
	$(call OPERATION_DOCS,$$tmp) && \
	$(VENV)/bin/buf build -o $$tmp/pixmesh.pb && \
	for d in $(GENERATED_DIRS); do \
		diff -r -q -x __pycache__ -x __init__.py $$tmp/pixmesh/$$d pixmesh/$$d || exit 1; \
	done && cmp -s $$tmp/pixmesh.pb deploy/envoy/pixmesh.pb || \
	{ echo "generated code is stale: run 'make proto' and commit the result" >&2; exit 1; }

# The contract: buf lint (STANDARD) and no breaking change against main.
BREAKING_AGAINST ?= .git\#branch=main
proto-lint: install
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf breaking --against '$(BREAKING_AGAINST)'

clean:
	rm -rf .pixmesh/run
