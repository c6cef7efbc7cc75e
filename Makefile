# Every target builds its own virtualenv first, so a fresh machine with only
# python3 needs nothing else: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench docs clean

# pbgreen/_ccodec.c is the optional compiled codec: an edit rebuilds it.
$(VENV)/.installed: pyproject.toml setup.py pbgreen/_ccodec.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# The suite runs twice: with the compiled codec (when it built), then pure Python.
test: $(VENV)/.installed
	$(PY) -m pytest -q && PBGREEN_PUREPYTHON=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache pbgreen/_ccodec*.so
