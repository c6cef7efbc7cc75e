# Every target builds its own virtualenv first, so a fresh machine with only
# python3 needs nothing else: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench docs clean haproxy

# pbgreen/_ccodec.c is the optional compiled codec: an edit rebuilds it.
$(VENV)/.installed: pyproject.toml setup.py pbgreen/_ccodec.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# The suite runs twice: with the compiled codec (when it built), then pure Python.
test: $(VENV)/.installed haproxy
	$(PY) -m pytest -q && PBGREEN_PUREPYTHON=1 $(PY) -m pytest -q

# tests/balancer runs pbgreen behind HAProxy: install Debian's package when it
# is missing (as root, else through sudo). Without apt-get or rights, say so
# and go on: those tests then fail, saying how to install it.
HAPROXY_HINT := make: haproxy is not installed and could not be installed here; the tests in tests/balancer need it (Debian/Ubuntu: sudo apt-get install -y haproxy; macOS: brew install haproxy)
haproxy:
	@if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "$(HAPROXY_HINT)" >&2; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo -n apt-get update -q && \
		sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy; \
	else echo "$(HAPROXY_HINT)" >&2; fi

# The benchmark's peers (RPyC, Pyro5) on top of the test install.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py

docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache pbgreen/_ccodec*.so
