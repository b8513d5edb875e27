# The habits of this project, one target each. CI calls `make test`, exactly as the README says.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run down status test test-unit test-integration test-mesh check fix bench bench-hops clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,agent,loadtest]"
	@touch $(STAMP)

## make run: the mesh on the embedded default (set DATABASE_URL / REDIS_URL to use servers)
run: $(STAMP)
	$(BIN)/callmesh up

## make down / make status: stop what `make run` started; show applications and replicas
down: $(STAMP)
	$(BIN)/callmesh down

status: $(STAMP)
	$(BIN)/callmesh status

## make test: the whole suite (unit, integration against real PostgreSQL/Redis/Ray Serve, e2e)
test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m unit

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

## make test-mesh: the Serve deployments through real HTTP (one Ray per run)
test-mesh: $(STAMP)
	$(BIN)/pytest tests/unit/deployments tests/integration/mesh

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services deployments agent loadtest

fix: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make bench: holds/s and confirmed bookings/s, mesh vs the same code in one uvicorn process
## (p50/p99, ratio, invariant); take it on a quiet machine. BENCH_ARGS=--json for JSON.
bench: $(STAMP)
	$(BIN)/python -m loadtest.bench --seconds 15 --connections 64 $(BENCH_ARGS)

## make bench-hops: holds/s through one hop vs two, Serve throughput flags off vs on
bench-hops: $(STAMP)
	$(BIN)/python -m loadtest.bench_hops --seconds 15 --connections 64

clean:
	rm -rf $(VENV) .callmesh .pytest_cache .ruff_cache .mypy_cache
