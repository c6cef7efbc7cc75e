# Every target builds its own virtualenv first, so a fresh machine with only
# python3 needs nothing else: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench docs clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The benchmark's peers (RPyC, Pyro5) on top of the test install.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py

docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
