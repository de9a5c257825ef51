# lojasync developer commands. `make demo` and `make test` create the virtual
# environment from requirements.lock on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-fast lint lock status clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "lojasync needs Python 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lojasync demo

status: install
	$(BIN)/lojasync status

# pytest exits with 5 when it collected no test; that is a failure here.
test: install
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check shared services demo tests bench
	$(BIN)/mypy shared/lojasync services demo bench

lock:
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Benchmarks of the real services on the local RabbitMQ and PostgreSQL; see BENCHMARKS.md.
# BENCH_ARGS adds options, e.g. BENCH_ARGS='--profile --json-out var/bench/result.json'.
BENCH_ARGS ?=
.PHONY: bench bench-quick
bench: install
	$(BIN)/python -m bench --runs 3 --backlog 200000 --max-load 1.5 $(BENCH_ARGS)

bench-quick: install
	$(BIN)/python -m bench --runs 1 --products 2000 --latency-seconds 3 --backlog 10000 $(BENCH_ARGS)
