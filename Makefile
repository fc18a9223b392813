# authproxy: `make demo` to try it, `make test` to check it. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_PROVIDER := tests/support/oidc_provider

.PHONY: help demo test lint format typecheck bench soak system-deps node-deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps: ## install redis-server, nginx, chromium and Node.js with apt-get when missing
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

node-deps: ## install the npm test provider (oidc-provider) from its lock file
	@if [ -f $(NODE_PROVIDER)/package-lock.json ] && [ ! -d $(NODE_PROVIDER)/node_modules ]; then \
	  npm ci --prefix $(NODE_PROVIDER) --no-audit --no-fund --loglevel=error; fi

demo: $(STAMP) ## run the demo: development provider + echo app + proxy on http://127.0.0.1:4180
	$(BIN)/authproxy demo

test: $(STAMP) system-deps node-deps ## set everything up and run the whole test suite (two processes)
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

bench: $(STAMP) system-deps node-deps ## load figures side by side (bench/results.md), then a 10-minute soak (bench/soak-results.md)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/soak.py

soak: $(STAMP) system-deps ## faults under load: Redis (standalone, Cluster, Sentinel) restarts, provider outage, upstream resets
	$(BIN)/python bench/soak_faults.py

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check authproxy tests bench scripts
	$(BIN)/ruff format --check authproxy tests bench scripts
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format authproxy tests bench scripts
	$(BIN)/ruff check --fix authproxy tests bench scripts

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache $(NODE_PROVIDER)/node_modules
