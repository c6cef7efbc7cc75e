"""HAProxy in front of PB servers, for tests and benchmarks: write its config, run it, stop it.

How it works. ``CONFIG`` is the HAProxy configuration that
``docs/deploying.md`` shows, for its example addresses: the frontend on
127.0.0.1:8800, the PB servers on 127.0.0.1:8801 and 127.0.0.1:8802 (a test
checks that the page and ``render_config`` agree). ``render_config`` puts
other addresses in the same text: one ``server`` line per backend.

``HAProxy(backends)`` picks a free port for the frontend (HAProxy cannot
report a port it picked, so the port comes from binding port 0 and closing
the socket again), writes the config into a temporary directory and starts
``haproxy -f CONFIG -db`` (in the foreground, no daemon) as a
``processes.Child``. It is ready once its frontend accepts a TCP
connection. If HAProxy exits first because another process took the port
in between, it tries again with another port, a few times. ``stop()`` ends
it (SIGTERM, then SIGKILL; see ``processes.Child.stop``), reaps it and
removes the directory; ``with HAProxy(...) as proxy:`` does that for sure.

Standard library only, like ``processes``: waiting polls with
``time.sleep`` unless given ``sleep=gevent.sleep``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from typing import Any, Callable, Sequence

from .processes import Child

__all__ = ["CONFIG", "EXAMPLE_BACKENDS", "EXAMPLE_FRONTEND", "HAProxy", "HAProxyMissing",
           "find_haproxy", "free_port", "render_config"]

#: What ``docs/deploying.md`` shows: the frontend and the two PB servers it names.
EXAMPLE_FRONTEND = ("127.0.0.1", 8800)
EXAMPLE_BACKENDS = (("127.0.0.1", 8801), ("127.0.0.1", 8802))

# {frontend} and {servers} are filled in by render_config; the rest is the
# configuration as the docs show it.
_TEMPLATE = """\
defaults
    mode tcp
    timeout connect 2s
    # Longer than pbgreen's keepalive (30 s): an idle PB connection sends a
    # probe before HAProxy would cut it.
    timeout client 2m
    timeout server 2m
    # A connection refused by a dead server goes to another one at once.
    retries 2
    option redispatch 1

frontend pb
    bind {frontend}
    default_backend pbgreen

backend pbgreen
    # PB connections live long: send each new one where the fewest are.
    balance leastconn
    # Healthy = greets in PB: a PROXY v2 header (LOCAL), then the server's
    # dialect list must arrive. A stuck or full server fails it.
    option tcp-check
    tcp-check expect string pbgreen
    # A server found dead takes its connections with it: clients reconnect.
    # maxconn: fewer than one server process accepts (max_connections).
    default-server send-proxy-v2 check inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions maxconn 9000
{servers}"""

_SERVER_LINE = "    server pb{number} {address}\n"


class HAProxyMissing(RuntimeError):
    """The ``haproxy`` program is not installed."""


def find_haproxy() -> str:
    """The path of the ``haproxy`` program.

    Raises:
        HAProxyMissing: not installed; the message says how to install it.
    """
    found = shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
         if os.access(path, os.X_OK)), None)
    if found is None:
        raise HAProxyMissing(
            "the haproxy program is not installed: `make test` installs it (Debian/Ubuntu: "
            "`sudo apt-get install -y haproxy`; macOS: `brew install haproxy`)")
    return found


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(frontend: tuple[str, int], backends: Sequence[tuple[str, int]]) -> str:
    """The HAProxy configuration for ``frontend`` and one ``server`` line per backend."""
    servers = "".join(_SERVER_LINE.format(number=number, address=_address(*backend))
                      for number, backend in enumerate(backends, 1))
    return _TEMPLATE.format(frontend=_address(*frontend), servers=servers)


#: The configuration ``docs/deploying.md`` shows.
CONFIG = render_config(EXAMPLE_FRONTEND, EXAMPLE_BACKENDS)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (another process may take it before you bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1.0).close()
    except OSError:
        return False
    return True


class HAProxy:
    """HAProxy running ``render_config`` for ``backends``; see the module docstring.

    Args:
        backends: the PB servers' ``(host, port)`` addresses.
        host: the interface the frontend listens on.
        timeout: seconds HAProxy has to start accepting (per attempt).
        attempts: how many free ports to try before giving up.
        sleep: how to pause between polls (``gevent.sleep`` in a gevent
            program, so its own servers keep serving).

    Attributes:
        address: the frontend's ``(host, port)``; connect PB clients here.
        config: the configuration HAProxy runs with.
        child: the running ``processes.Child`` (its ``stderr`` holds
            HAProxy's messages, e.g. ``Server pbgreen/pb1 is DOWN``).
    """

    def __init__(self, backends: Sequence[tuple[str, int]], *, host: str = "127.0.0.1",
                 timeout: float = 10.0, attempts: int = 5,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        binary = find_haproxy()
        self._sleep = sleep
        self._folder = tempfile.mkdtemp(prefix="pbgreen-haproxy-")
        self.child: Child | None = None
        with contextlib.ExitStack() as on_failure:  # nothing left running or on disk
            on_failure.callback(self.stop)
            for attempt in range(attempts):
                self.address = (host, free_port(host))
                self.config = render_config(self.address, backends)
                path = os.path.join(self._folder, "haproxy.cfg")
                with open(path, "w") as cfg:
                    cfg.write(self.config)
                child = Child([binary, "-f", path, "-db"], label="haproxy")
                self.child = child
                if self._wait_accepting(child, timeout):
                    on_failure.pop_all()
                    return
                bind_failed = "cannot bind" in child.stderr or "Address already" in child.stderr
                child.stop(grace=0)
                if not bind_failed or attempt == attempts - 1:
                    raise RuntimeError(f"haproxy did not start accepting on "
                                       f"{_address(*self.address)}\n{child.describe()}")

    def _wait_accepting(self, child: Child, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while child.returncode is None and time.monotonic() < deadline:
            if _accepts(self.address):
                return True
            self._sleep(0.02)
        return False

    def __enter__(self) -> HAProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.address[1]

    def stop(self) -> None:
        """Stop HAProxy, reap it and remove its directory (any number of times)."""
        if self.child is not None:
            self.child.stop(grace=0)
        shutil.rmtree(self._folder, ignore_errors=True)
