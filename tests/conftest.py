"""Suite-wide settings.

The leak check on connections, waiting calls, greenlets and sockets is
pbgreen's own pytest plugin (``pbgreen.testing``, enabled for every test by
``usefixtures = pb_leak_check`` in pyproject.toml). This file adds what only
this suite needs: no test may leave a child process behind (the interop and
example tests start many), and two helpers for tests that check behaviour
through the public API rather than pbgreen's private tables:

``wait_until(condition, timeout=5, message=...)``
    Poll ``condition()`` (collecting garbage between tries, so weakrefs die
    and finalizers queue their decrefs) until it is true, or fail the test
    when ``timeout`` seconds have passed.
``pbgreen_memory()``
    Bytes held right now by objects that pbgreen's own code allocated,
    measured with tracemalloc (traced for the test). Two readings around a
    loop show whether each round leaves something behind.
"""

from __future__ import annotations

import gc
import os
import shutil
import ssl
import subprocess
import time
import tracemalloc
from typing import Any, Callable, Iterator

import gevent
import pytest

import pbgreen

pytest_plugins = ["pytester"]


def _children() -> set[int]:
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            kids.add(int(entry))
    return kids


@pytest.fixture(autouse=True)
def no_child_processes_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a process it started is still running afterwards."""
    before = _children()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    deadline = time.monotonic() + 3
    while (extra := _children() - before) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    if extra:
        pytest.fail(f"test left child process(es) {sorted(extra)} running", pytrace=False)


def _wait_until(condition: Callable[[], Any], timeout: float = 5.0,
                message: str | Callable[[], str] = "condition never became true") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"after {timeout} s: {text}", pytrace=False)
        gevent.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(condition, timeout=5, message=...)``: poll with a deadline."""
    return _wait_until


_PBGREEN_FILES = os.path.join(os.path.dirname(os.path.abspath(pbgreen.__file__)), "*")


@pytest.fixture
def pbgreen_memory() -> Iterator[Callable[[], int]]:
    """``pbgreen_memory()``: bytes now held by what pbgreen's code allocated (tracemalloc)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()

    def measure() -> int:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, _PBGREEN_FILES)])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    yield measure
    if started:
        tracemalloc.stop()


# --- TLS: one self-signed certificate for localhost and 127.0.0.1 per test run


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """``(cert, key)`` paths, made with the openssl command (skips without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def server_context(certificate):
    """A server ``ssl.SSLContext`` with the test certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_context(certificate):
    """A client ``ssl.SSLContext`` that trusts the test certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(certificate[0])
    return context
