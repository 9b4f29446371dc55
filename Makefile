# segstream: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install sysdeps test lint format demo clean bench

# System packages the tests need: redis-server (Redis), chromium (report browser test).
# Installed with apt when missing (CI and our machines run as root).
SYSDEPS := redis-server:redis-server chromium:chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy state producer offline consumer

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install sysdeps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The first command of a newcomer: everything end to end on embedded defaults.
DEMO_SECONDS ?= 60
DEMO_CUSTOMERS ?= 5000
DEMO_ARGS ?=
demo: install
	$(BIN)/segstream demo --seconds $(DEMO_SECONDS) --customers $(DEMO_CUSTOMERS) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
