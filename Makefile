# The two commands a user needs: `make run` and `make test`. Each builds .venv first.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
CONFIG ?= configs/local.yaml

# python3.10 from PATH, else from pyenv's versions folder, else the system's.
find_python = for c in python3.10 "$$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do \
	  if "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then echo "$$c"; break; fi; \
	done

.PHONY: venv run test test-fast e2e bench lint lock clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@py="$$($(find_python))"; \
	if [ -z "$$py" ]; then \
	  echo "error: Python 3.10 was not found (TFX 1.16 needs Python 3.10)." >&2; \
	  echo "       Install it, e.g. 'pyenv install 3.10.13' or your OS package python3.10, then re-run." >&2; \
	  exit 1; \
	fi; \
	if ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then \
	  echo "creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV) || exit 1; \
	fi
	$(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --python $(VENV)/bin/python requirements.lock
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/taxifare run --config $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest tests -m "not e2e"

e2e: $(STAMP)
	$(VENV)/bin/python -m pytest tests -m e2e

bench: $(STAMP)
	$(VENV)/bin/python -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline taxifare_modules tests bench

# Regenerate the lock after editing requirements.in.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile -q --python-version 3.10 --python-platform x86_64-manylinux_2_28 \
	  requirements.in -o requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache
