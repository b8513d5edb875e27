# The habits of this project, one target each. CI calls `make test`, exactly as the README says.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-integration check fix bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,agent,loadtest]"
	@touch $(STAMP)

## make run: the mesh on the embedded default (set DATABASE_URL / REDIS_URL to use servers)
run: $(STAMP)
	$(BIN)/callmesh up

## make test: the whole suite (unit, integration against real PostgreSQL/Redis/Ray Serve, e2e)
test: $(STAMP)
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m unit

test-integration: $(STAMP)
	$(BIN)/pytest -m integration

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services deployments agent loadtest

fix: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .callmesh .pytest_cache .ruff_cache .mypy_cache
