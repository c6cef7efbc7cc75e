"""Many server processes on one port: a supervisor and its workers.

How it works. The supervisor (``WorkerPool``, in the process that calls
it) binds and listens on one TCP socket, then starts each worker as a
fresh interpreter (``python -m pbgreen._worker``, not a fork: nothing of
the supervisor's gevent hub or threads is copied) that inherits three file
descriptors with ``subprocess``'s ``pass_fds``:

* the **listening socket**: every worker accepts on the same socket, so
  the kernel hands each new connection to one of them, a worker that dies
  loses none of the connections still queued, and ``port=0`` needs no
  trick (the supervisor binds once and knows the port). ``SO_REUSEPORT``
  (one socket per worker) would balance more evenly but drops the queue of
  a worker that dies, and does not balance on every system;
* a **ready pipe**, on which the worker writes one byte once it serves;
* the read end of a **lifeline pipe** whose write end only the supervisor
  holds: when the supervisor goes, even by SIGKILL, the kernel closes it,
  the workers read end-of-file and stop gracefully. This works on every
  POSIX system, unlike Linux's ``PR_SET_PDEATHSIG``.

The supervisor serves nothing itself. Its loop waits (``select``) on the
ready pipes and on a wake-up pipe that its SIGCHLD, SIGTERM and SIGINT
handlers write to. A worker that exits is logged at WARNING with its exit
status and started again; one that keeps dying within ``QUICK_DEATH``
seconds of its start is started again at once the first time, then after
0.5 s, 1 s, 2 s ... capped at ``MAX_BACKOFF`` (``restart_delay``). On
SIGTERM or SIGINT (or ``stop()``) the supervisor closes its copy of the
socket, sends SIGTERM to every worker (each does
``PBServer.stop(timeout=graceful_timeout)``: running calls finish), waits
for them and returns 0; a second request kills the workers at once
(SIGKILL; status 1). A worker takes any number of SIGTERMs as one request,
so a signal sent to the whole group (systemd's default) changes nothing. Workers ignore SIGINT: a Ctrl-C reaches the whole process
group, and the supervisor relays it as SIGTERM.

Standard library only in this process: gevent is imported by the workers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from . import portno

__all__ = ["WorkerPool", "WorkerStartError", "serve_workers", "restart_delay", "QUICK_DEATH",
           "MAX_BACKOFF"]

log = logging.getLogger("pbgreen.workers")

#: A worker that dies sooner than this after its start counts as dying quickly.
QUICK_DEATH = 10.0
#: The longest wait before starting again a worker that keeps dying quickly.
MAX_BACKOFF = 4.0
#: Beyond the graceful timeout, how long the supervisor waits before SIGKILL.
STOP_MARGIN = 5.0

_RELAYED = (signal.SIGTERM, signal.SIGINT)


class WorkerStartError(RuntimeError):
    """A worker exited before it served (its own stderr says why)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def factory_spec(factory: str | Callable[[], Any]) -> tuple[str, str | None]:
    """``("module:attr", extra_path)`` for a spec or an importable callable.

    The workers are fresh interpreters, so what makes the root must be
    found by name there: a ``"module:attr"`` string (as ``pbgreen serve``
    takes), or a class or function defined at the top level of a module. A
    callable of the script that was run (``__main__``) is found by its
    file's name, with the script's directory put on the workers' path: that
    script must then keep its start-up under ``if __name__ == "__main__":``
    (as with ``multiprocessing``).
    """
    if isinstance(factory, str):
        return factory, None
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"cannot start workers with {factory!r}: give a 'module:attr' string "
                        "or a class or function defined at the top level of a module")
    if module == "__main__":
        path = getattr(sys.modules["__main__"], "__file__", None)
        if not path:
            raise TypeError(f"cannot start workers with {factory!r}: it lives in an "
                            "interactive session; define it in a module")
        module = os.path.splitext(os.path.basename(path))[0]
        return f"{module}:{qualname}", os.path.dirname(os.path.abspath(path))
    return f"{module}:{qualname}", None


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``port=0``: a free port).

    IPv6 when ``host`` holds a colon, else IPv4, as ``PBServer`` chooses.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    with contextlib.ExitStack() as on_failure:  # closed unless it listens
        on_failure.callback(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        on_failure.pop_all()
    return sock


class _Worker:
    """One slot of the pool: the process in it now and how its predecessors fared."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_pipe: int | None = None
        self.ready = False
        self.started_at = 0.0
        self.quick_deaths = 0
        self.start_at: float | None = None  # when to start it again, after a death

    def close_ready_pipe(self) -> None:
        if self.ready_pipe is not None:
            os.close(self.ready_pipe)
            self.ready_pipe = None


class WorkerPool:
    """Serve one root factory from ``workers`` processes sharing one port.

    Args:
        factory: what makes the root (or portal) in each worker: a
            ``"module:attr"`` string, as ``pbgreen serve`` takes (an object,
            or a class or function called with no arguments), or such a
            class or function itself (see ``factory_spec``).
        port: TCP port; 0 picks a free one (see ``address`` after ``start``).
        host: interface to listen on.
        workers: how many processes; 0 means one per CPU (``os.cpu_count()``).
        graceful_timeout: on SIGTERM or SIGINT, how long running calls may
            finish in each worker.
        backlog: the listen queue, shared by every worker.
        tls_cert, tls_key: PEM files: the workers serve TLS (an
            ``ssl.SSLContext`` cannot cross to another process).
        log_level: configure logging in the workers at this level (``"INFO"``
            ...), to stderr; ``None`` leaves them Python's defaults.
        server_options: more ``PBServer`` keyword arguments, plain values
            only (``max_connections``, ``max_calls``, ``handshake_timeout``,
            ``keepalive``, ``idle_timeout``, ``high_water``,
            ``unsafeTracebacks``, ``proxy_protocol``).
    """

    def __init__(self, factory: str | Callable[[], Any], *, port: int = portno,
                 host: str = "0.0.0.0", workers: int = 0, graceful_timeout: float = 10.0,
                 backlog: int = 1024, tls_cert: str | None = None, tls_key: str | None = None,
                 log_level: str | None = None, **server_options: Any) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 (one per CPU) or more, got {workers}")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        for name in ("host", "port", "ssl_context", "listener", "backlog"):
            if name in server_options:
                raise TypeError(f"WorkerPool does not take PBServer's {name!r} option")
        self.target, extra_path = factory_spec(factory)
        self.workers = workers or os.cpu_count() or 1
        self.graceful_timeout = graceful_timeout
        self._host, self._port, self._backlog = host, port, backlog
        self._config = {"target": self.target, "path": extra_path, "tls_cert": tls_cert,
                        "tls_key": tls_key, "log_level": log_level,
                        "graceful_timeout": graceful_timeout, "options": server_options}
        try:
            json.dumps(self._config)
        except (TypeError, ValueError):
            raise TypeError("WorkerPool server options must be plain values (numbers, "
                            f"strings, booleans, None), got {server_options!r}") from None
        self._listener: socket.socket | None = None
        self._lifeline: tuple[int, int] | None = None
        self._wakeup: tuple[int, int] | None = None
        self._slots = [_Worker(number) for number in range(1, self.workers + 1)]
        self._stop_requests: list[str] = []  # why: "SIGTERM", "stop()"; a second one hurries
        self._previous: dict[int, Any] = {}
        self._stopping = False

    # ------------------------------------------------------------------ public

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` actually bound (after ``start``)."""
        if self._listener is None:
            raise RuntimeError("the pool is not started")
        return self._listener.getsockname()[:2]

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [slot.process.pid for slot in self._slots
                if slot.process is not None and slot.process.returncode is None]

    def start(self, timeout: float = 60.0) -> None:
        """Listen, start the workers and return once every one of them serves.

        One worker starts first, so a factory that cannot be loaded fails
        once (``WorkerStartError``, with the worker's exit status; the
        worker's stderr says why), not once per worker. ``OSError`` if the
        address cannot be bound.
        """
        self._listener = listen(self._host, self._port, self._backlog)
        self._lifeline = os.pipe()
        self._wakeup = os.pipe()
        os.set_blocking(self._wakeup[1], False)
        self._install_handlers()
        with contextlib.ExitStack() as on_failure:  # no worker left behind
            on_failure.callback(self._shutdown, graceful=False)
            deadline = time.monotonic() + timeout
            self._spawn(self._slots[0])
            self._wait_ready(self._slots[:1], deadline)
            for slot in self._slots[1:]:
                self._spawn(slot)
            self._wait_ready(self._slots, deadline)
            on_failure.pop_all()

    def serve_forever(self) -> int:
        """Start if needed, supervise until SIGTERM, SIGINT or ``stop()``; the exit status.

        Then every worker stops gracefully: 0, or 1 when a second signal (or
        ``stop()``) cut that short. Signals are caught when this runs in the
        main thread; from another thread, call ``stop()``.
        """
        if self._listener is None:
            self.start()
        try:
            while not self._stop_requests:
                self._step(self._next_timeout())
        finally:
            status = self._shutdown(graceful=True)
        return status

    # ------------------------------------------------------------------ workers

    def _spawn(self, slot: _Worker) -> None:
        assert self._listener is not None and self._lifeline is not None
        ready_read, ready_write = os.pipe()
        config = dict(self._config, listen_fd=self._listener.fileno(),
                      lifeline_fd=self._lifeline[0], ready_fd=ready_write)
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(os.close, ready_read)  # no worker will write to it
            try:
                slot.process = subprocess.Popen(
                    [sys.executable, "-m", "pbgreen._worker", json.dumps(config)],
                    pass_fds=(self._listener.fileno(), self._lifeline[0], ready_write),
                    stdin=subprocess.DEVNULL)
            finally:
                os.close(ready_write)  # the worker holds its own copy
            on_failure.pop_all()
        slot.ready_pipe = ready_read
        slot.ready = False
        slot.started_at = time.monotonic()
        slot.start_at = None
        log.info("worker %d started (pid %d)", slot.number, slot.process.pid)

    def _wait_ready(self, slots: list[_Worker], deadline: float) -> None:
        while not all(slot.ready for slot in slots):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pbgreen workers did not start serving within the "
                                   f"deadline (pids {self.pids})")
            self._step(left, starting=True)
            if self._stop_requests:
                raise KeyboardInterrupt

    def _step(self, timeout: float | None, starting: bool = False) -> None:
        """Wait for a ready byte, a signal or the next restart, then handle what came."""
        assert self._wakeup is not None
        pipes = {slot.ready_pipe: slot for slot in self._slots if slot.ready_pipe is not None}
        try:
            readable, _, _ = select.select([self._wakeup[0], *pipes], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may not
            readable = []
        for fd in readable:
            if fd == self._wakeup[0]:
                os.read(fd, 4096)
                continue
            slot = pipes[fd]
            if os.read(fd, 1):
                slot.ready = True
                log.info("worker %d (pid %d) serving", slot.number, slot.process.pid)
            slot.close_ready_pipe()
        self._reap(starting)
        if not self._stopping:
            now = time.monotonic()
            for slot in self._slots:
                if slot.start_at is not None and slot.start_at <= now:
                    self._spawn(slot)

    def _reap(self, starting: bool) -> None:
        for slot in self._slots:
            process = slot.process
            if process is None or process.returncode is not None or process.poll() is None:
                continue
            slot.close_ready_pipe()
            status = _describe(process.returncode)
            if self._stopping:
                log.info("worker %d (pid %d) exited: %s", slot.number, process.pid, status)
                continue
            if starting and not slot.ready:
                raise WorkerStartError(f"pbgreen worker {slot.number} (pid {process.pid}) "
                                       f"exited before serving: {status}",
                                       process.returncode if process.returncode > 0 else 1)
            lived = time.monotonic() - slot.started_at
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
            delay = restart_delay(slot.quick_deaths)
            log.warning("worker %d (pid %d) %s after %.1f s; starting another %s",
                        slot.number, process.pid, status, lived,
                        f"in {delay:g} s" if delay else "now")
            slot.start_at = time.monotonic() + delay

    def _next_timeout(self) -> float | None:
        waits = [slot.start_at for slot in self._slots if slot.start_at is not None]
        return None if not waits else max(0.0, min(waits) - time.monotonic())

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Make ``serve_forever`` stop every worker gracefully (a second call: at once).

        Safe from any thread and from a signal handler.
        """
        self._request_stop("stop()")

    def _request_stop(self, reason: str | None) -> None:
        """Record why we stop (``None``: only wake the loop) and wake it."""
        if reason is not None:
            self._stop_requests.append(reason)
        wakeup = self._wakeup
        if wakeup is not None:
            try:
                os.write(wakeup[1], b"!")
            except OSError:
                pass  # the pipe is full: the loop is awake already

    def _install_handlers(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self._request_stop(None if signum == signal.SIGCHLD
                               else signal.Signals(signum).name)

        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread: stop() is not offered yet
        for signum in (*_RELAYED, signal.SIGCHLD):
            self._previous[signum] = signal.signal(signum, on_signal)

    def _shutdown(self, graceful: bool) -> int:
        """Stop every worker (gracefully: SIGTERM, then wait), close everything; the status."""
        self._stopping = True
        if self._stop_requests:
            log.info("%s: stopping %d workers; running calls have up to %g s to finish",
                     self._stop_requests[0], len(self.pids), self.graceful_timeout)
        if self._listener is not None:
            self._listener.close()  # the workers keep it open until each has stopped
        for pid in self.pids:
            _kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        hurried = False
        deadline = time.monotonic() + (self.graceful_timeout + STOP_MARGIN if graceful else 5)
        while self.pids and time.monotonic() < deadline:
            if len(self._stop_requests) > 1 and not hurried:  # a second SIGTERM: at once
                log.warning("%s again: stopping the workers without waiting for running "
                            "calls", self._stop_requests[1])
                hurried = True
                for pid in self.pids:
                    _kill(pid, signal.SIGKILL)
            self._step(min(0.5, max(0.0, deadline - time.monotonic())))
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                log.warning("worker %d (pid %d) still running: killing it", slot.number,
                            slot.process.pid)
                slot.process.kill()
                slot.process.wait()
            slot.close_ready_pipe()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        for pair in (self._lifeline, self._wakeup):
            if pair is not None:
                os.close(pair[0])
                os.close(pair[1])
        self._lifeline = self._wakeup = None
        return 1 if len(self._stop_requests) > 1 else 0


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before starting a worker that died quickly ``quick_deaths`` times in a row.

    0 for the first death (a worker killed by accident comes back at
    once), then 0.5 s, doubling, capped at ``MAX_BACKOFF``.
    """
    if quick_deaths <= 1:
        return 0.0
    return min(MAX_BACKOFF, 0.5 * 2.0 ** min(quick_deaths - 2, 16))


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def serve_workers(factory: str | Callable[[], Any], **options: Any) -> int:
    """``WorkerPool(factory, **options).serve_forever()``: serve until SIGTERM or SIGINT.

    Returns the exit status (0 after a graceful stop).
    """
    return WorkerPool(factory, **options).serve_forever()
