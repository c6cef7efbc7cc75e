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
from gevent import socket
from gevent.event import Event
import pytest

import pbgreen
from pbgreen.testing.processes import children

pytest_plugins = ["pytester"]


def _children() -> set[int]:
    return children(os.getpid())


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


# --- a TCP proxy that can stall without closing (keepalive tests)


class FreezableProxy:
    """A TCP proxy 127.0.0.1:port -> upstream; ``freeze()`` stalls it silently.

    Every accepted connection gets its own upstream connection and two pump
    greenlets. While frozen the pumps neither read nor write (what one has
    already read is held back), and no socket is closed, so neither end gets
    a FIN or an RST. ``close()`` ends everything it made.

    ``header(client_address) -> bytes`` makes it a PROXY protocol sender: the
    bytes go upstream first, on their own as soon as the upstream connection
    is made, or with ``header_with_data`` in one write with the client's
    first bytes (a TLS ClientHello).
    """

    def __init__(self, upstream, header=None, header_with_data=False):
        self.upstream = upstream
        self.header = header
        self.header_with_data = header_with_data
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.flowing = Event()
        self.flowing.set()
        self.sockets = []
        self.pumps = []
        self.accepted = 0
        self.forwarded = {"up": 0, "down": 0}  # bytes client->server, server->client
        self._acceptor = gevent.spawn(self._accept)

    def _accept(self):
        while True:
            downstream, address = self.listener.accept()
            self.sockets.append(downstream)
            upstream = socket.create_connection(self.upstream)
            self.sockets.append(upstream)
            self.accepted += 1
            prefix = b"" if self.header is None else self.header(address)
            if not self.header_with_data:
                upstream.sendall(prefix)
                prefix = b""
            self.pumps.append(gevent.spawn(self._pump, downstream, upstream, "up", prefix))
            self.pumps.append(gevent.spawn(self._pump, upstream, downstream, "down"))

    def _pump(self, src, dst, direction, prefix=b""):
        try:
            while True:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()  # frozen meanwhile: hold it back, deliver nothing
                dst.sendall(prefix + data)
                prefix = b""
                self.forwarded[direction] += len(data)
        except OSError:
            return
        try:  # pass the end of stream on, as a transparent proxy does
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def freeze(self):
        self.flowing.clear()

    def close(self):
        gevent.killall([self._acceptor, *self.pumps], timeout=5)
        for sock in self.sockets:
            sock.close()
        self.listener.close()


@pytest.fixture
def proxy():
    """``proxy(upstream_address, header=None, header_with_data=False) -> FreezableProxy``.

    Every proxy is closed in teardown.
    """
    made = []

    def make(upstream, **options):
        p = FreezableProxy(upstream, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
