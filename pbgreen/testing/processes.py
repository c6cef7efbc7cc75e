"""Child processes for tests, examples and benchmarks: start, wait for a line, stop.

How it works. ``Child`` starts a program with ``subprocess.Popen``. Its
stdout (and its stderr, when captured) is read by one daemon thread per
pipe, which appends each line to a list and wakes whoever waits on the
child's condition variable. So a child can never block on a full pipe, and
every wait for output is ``Condition.wait_for`` under a deadline: a child
that hangs costs a ``ChildTimeout``, never a hung parent.

``start(argv, ready=...)`` is ``Child(argv).wait_ready(ready)``: it waits
for the first stdout line matching the ``ready`` pattern (by default
``PORT <n>``) and reads the port from the pattern's first group. If the
child exits or stays silent until the deadline, it is stopped and the error
says what it printed.

``stop()`` ends a child in steps, each under a deadline: close its stdin
(the cue for programs that leave at EOF), wait ``grace`` seconds, SIGTERM,
wait ``timeout`` seconds, SIGKILL. Then it always reaps the child (no
zombie), joins the reader threads and closes every pipe and file it opened.
It may be called any number of times. ``with start(...) as child:`` stops
the child however the block ends, and an ``atexit`` hook stops any child
still running when the interpreter exits (a Ctrl-C that escaped every
``finally``). A parent killed by SIGTERM runs no ``atexit`` hooks; scripts
turn SIGTERM into ``SystemExit`` for that.

Standard library only: this module imports neither gevent nor pytest.
Reading a line blocks the calling thread (in a gevent program, the hub) up
to its deadline; ``wait(timeout, sleep=gevent.sleep)`` waits for an exit
cooperatively. The reader threads are real threads, so do not use this in
a process that monkey-patched ``threading``.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import threading
import time
from typing import IO, Any, Callable, Sequence, Union

__all__ = ["CAPTURE", "PORT_LINE", "Child", "ChildError", "ChildExited", "ChildTimeout",
           "children", "start"]

#: The ready line benchmark and interop servers print first: ``PORT 43123``.
PORT_LINE = r"^PORT (\d+)$"

#: Keep stderr in memory (``Child.stderr``); the same value as subprocess.PIPE.
CAPTURE = subprocess.PIPE

#: Where stderr goes: CAPTURE, None (the parent's stderr), subprocess.DEVNULL,
#: subprocess.STDOUT, a path (opened for writing) or a binary file.
Destination = Union[str, int, "os.PathLike[str]", IO[bytes], None]

_TAIL_LINES = 20
_running: set[Child] = set()


class ChildError(RuntimeError):
    """A child did not print what the parent waited for."""


class ChildExited(ChildError):
    """The child closed its stdout (it exited) before printing the line waited for."""


class ChildTimeout(ChildError, TimeoutError):
    """The deadline passed before the child printed the line waited for."""


class _Lines:
    """The lines of one pipe, read by a daemon thread as they arrive."""

    def __init__(self, pipe: IO[bytes], changed: threading.Condition, name: str) -> None:
        self.lines: list[str] = []
        self.open = True
        self.pipe = pipe
        self._changed = changed
        self.thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            for raw in iter(self.pipe.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            with self._changed:
                self.open = False
                self._changed.notify_all()

    def text(self) -> str:
        return "".join(self.lines)


class Child:
    """A program running in a subprocess; see the module docstring.

    Args:
        argv: the command, e.g. ``[sys.executable, "server.py", "0"]``.
        stdin: ``subprocess.PIPE`` (the default: ``send()`` writes to it and
            ``stop()`` closes it) or ``subprocess.DEVNULL``.
        stderr: ``CAPTURE`` (the default), ``None`` (the parent's stderr),
            ``subprocess.DEVNULL``, ``subprocess.STDOUT``, a path or a
            binary file. stdout is always captured.
        label: a name for error messages; by default the script's name.
        grace: the default for ``stop(grace=...)``, so also what the
            context manager gives a child to leave after its stdin closes.
        cwd, env: as for ``subprocess.Popen``.
    """

    def __init__(self, argv: Sequence[str | os.PathLike[str]], *, stdin: int = subprocess.PIPE,
                 stderr: Destination = CAPTURE, label: str | None = None, grace: float = 0.0,
                 cwd: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.label = label or _default_label(self.argv)
        self.grace = grace
        #: The match of the ready pattern, and the port it gave (see ``wait_ready``).
        self.ready: re.Match[str] | None = None
        self.port: int | None = None
        self._changed = threading.Condition()
        self._cursor = 0  # stdout lines already returned by read_line
        self._opened: IO[bytes] | None = None
        stderr_dest = stderr
        if isinstance(stderr, (str, os.PathLike)):
            self._opened = stderr_dest = open(stderr, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE,
                                         stderr=stderr_dest, cwd=cwd, env=env)
        except OSError:
            if self._opened is not None:
                self._opened.close()
            raise
        _running.add(self)
        self._out = _Lines(self.proc.stdout, self._changed, f"{self.label} stdout")
        self._err = (_Lines(self.proc.stderr, self._changed, f"{self.label} stderr")
                     if self.proc.stderr is not None else None)

    def __repr__(self) -> str:
        return f"<Child {self.label} pid {self.pid} {self._state()}>"

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while the child runs (negative: killed by that signal)."""
        return self.proc.poll()

    @property
    def stdout(self) -> str:
        """Everything the child has written to stdout so far."""
        with self._changed:
            return self._out.text()

    @property
    def stderr(self) -> str:
        """Everything the child has written to stderr so far (CAPTURE only)."""
        if self._err is None:
            raise ValueError(f"{self.label}: stderr is not captured")
        with self._changed:
            return self._err.text()

    # --- reading ------------------------------------------------------------

    def read_line(self, timeout: float, *, sleep: Callable[[float], Any] | None = None) -> str:
        """The next stdout line not read yet, without its line end.

        With ``sleep`` (e.g. ``gevent.sleep``) it polls and sleeps instead of
        blocking the thread, so a gevent server in this process keeps serving.

        Raises:
            ChildTimeout: no new line within ``timeout`` seconds.
            ChildExited: the child closed its stdout and every line was read.
        """
        out = self._out

        def arrived() -> bool:
            return self._cursor < len(out.lines) or not out.open
        if sleep is not None:
            deadline = time.monotonic() + max(0.0, timeout)
            while not arrived() and time.monotonic() < deadline:
                sleep(0.01)
        with self._changed:
            if sleep is None:
                self._changed.wait_for(arrived, timeout=max(0.0, timeout))
            if self._cursor < len(out.lines):
                line = out.lines[self._cursor]
                self._cursor += 1
                return line.rstrip("\r\n")
            still_open = out.open
        if still_open:
            raise ChildTimeout(f"{self.label}: no line within {timeout:.3g} s ({self._state()})")
        try:
            self.proc.wait(2.0)  # it closed its stdout: it is probably exiting
        except subprocess.TimeoutExpired:
            pass
        raise ChildExited(f"{self.label}: closed its stdout ({self._state()})")

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0, *,
               sleep: Callable[[float], Any] | None = None) -> re.Match[str]:
        """Read stdout lines until one matches ``pattern`` (``re.search``); its match.

        Lines read on the way stay in ``stdout`` but are not returned again.
        Raises ``ChildTimeout`` or ``ChildExited`` as ``read_line`` does.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.read_line(deadline - time.monotonic(), sleep=sleep)
            except ChildTimeout:
                raise ChildTimeout(f"{self.label}: nothing matching {regex.pattern!r} within "
                                   f"{timeout:g} s\n{self.describe()}") from None
            except ChildExited:
                raise ChildExited(f"{self.label}: exited before printing a line matching "
                                  f"{regex.pattern!r}\n{self.describe()}") from None
            found = regex.search(line)
            if found:
                return found

    def wait_ready(self, ready: str | re.Pattern[str] = PORT_LINE, timeout: float = 30.0, *,
                   sleep: Callable[[float], Any] | None = None) -> Child:
        """Wait for a stdout line matching ``ready``; return the child itself.

        ``sleep``: as for ``read_line``. The match is kept as ``self.ready``; if the pattern has a group, its
        first group is read as ``self.port``.

        Raises:
            ChildExited, ChildTimeout: the child exited or stayed silent; it
                has been stopped, and the message shows what it printed.
        """
        started = False
        try:
            self.ready = self.expect(ready, timeout, sleep=sleep)
            if self.ready.re.groups:
                self.port = int(self.ready.group(1))
            started = True
        finally:
            if not started:
                self.stop(grace=0)
        return self

    def wait_for(self, predicate: Callable[[str], Any], *, stream: str = "stdout",
                 timeout: float = 10.0) -> bool:
        """Wait until ``predicate(everything in stream so far)`` is true.

        ``stream`` is "stdout" or "stderr". Returns False if the deadline
        passes or the stream closes first.
        """
        lines = {"stdout": self._out, "stderr": self._err}[stream]
        if lines is None:
            raise ValueError(f"{self.label}: {stream} is not captured")
        with self._changed:
            self._changed.wait_for(lambda: predicate(lines.text()) or not lines.open,
                                   timeout=timeout)
            return bool(predicate(lines.text()))

    def wait_for_text(self, text: str, *, stream: str = "stdout", timeout: float = 10.0) -> bool:
        """Wait until ``text`` appears anywhere in ``stream``; False if it never does."""
        return self.wait_for(lambda got: text in got, stream=stream, timeout=timeout)

    def describe(self) -> str:
        """The child's state and the last lines of what it printed, for error messages."""
        parts = [f"{self.label} (pid {self.pid}) {self._state()}"]
        streams = [("stdout", self._out), ("stderr", self._err)]
        with self._changed:
            for name, lines in streams:
                if lines is not None and lines.lines:
                    tail = "".join(lines.lines[-_TAIL_LINES:])
                    parts.append(f"--- {name} (last {_TAIL_LINES} lines at most):\n{tail}")
        return "\n".join(parts).rstrip("\n")

    # --- writing --------------------------------------------------------------

    def send(self, data: str | bytes) -> bool:
        """Write to the child's stdin and flush; False if its stdin is gone."""
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return False
        try:
            stdin.write(data.encode() if isinstance(data, str) else data)
            stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def close_stdin(self) -> None:
        """Close the child's stdin: EOF, the cue to leave for programs that read it."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.close()
            except OSError:  # unflushed data to a child that is gone
                pass

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child if it still runs."""
        self.proc.send_signal(signum)

    # --- ending -------------------------------------------------------------------

    def wait(self, timeout: float | None = None, *,
             sleep: Callable[[float], Any] | None = None) -> int | None:
        """Wait for the child to exit by itself; its exit status, or None at the deadline.

        With ``sleep`` (e.g. ``gevent.sleep``) the wait polls and sleeps
        between polls instead of blocking the thread. The child is not
        stopped at the deadline: call ``stop()`` for that. Once it has
        exited its output is complete and its pipes are closed.
        """
        if sleep is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        else:
            end = None if timeout is None else time.monotonic() + timeout
            while self.proc.poll() is None:
                if end is not None and time.monotonic() >= end:
                    return None
                sleep(0.02)
        return self._finish()

    def stop(self, grace: float | None = None, timeout: float = 5.0) -> int:
        """End the child, reap it, close its pipes; its exit status.

        Closes stdin, waits up to ``grace`` seconds (default: the ``grace``
        given to ``Child``) for the child to leave, sends SIGTERM and waits
        up to ``timeout`` seconds, then SIGKILL.
        """
        proc = self.proc
        self.close_stdin()
        grace = self.grace if grace is None else grace
        if grace > 0:
            self._reap(grace)
        if proc.poll() is None:
            proc.terminate()
            self._reap(timeout)
        return self.kill()

    def kill(self) -> int:
        """SIGKILL the child at once if it still runs, reap it, close its pipes; its exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self._finish()

    def _finish(self) -> int:
        # The child has exited or been sent SIGKILL: reap it, take the last
        # of its output, close everything.
        proc = self.proc
        proc.wait()
        _running.discard(self)
        self.close_stdin()
        self._settle(5.0)
        self._close_pipes()
        return proc.returncode

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _settle(self, timeout: float) -> None:
        # Once the child has exited its pipes reach EOF: let the readers take
        # the last lines. A grandchild holding a pipe open only costs the wait.
        for lines in (self._out, self._err):
            if lines is not None:
                lines.thread.join(timeout)

    def _close_pipes(self) -> None:
        for lines in (self._out, self._err):
            if lines is not None and not lines.thread.is_alive():
                lines.pipe.close()
        if self._opened is not None:
            self._opened.close()

    def _state(self) -> str:
        code = self.proc.poll()
        return "running" if code is None else f"exited with status {code}"


def start(argv: Sequence[str | os.PathLike[str]], ready: str | re.Pattern[str] = PORT_LINE,
          timeout: float = 30.0, *, sleep: Callable[[float], Any] | None = None,
          **kwargs: Any) -> Child:
    """Start ``argv`` and wait for its ready line: ``Child(argv, **kwargs).wait_ready(...)``.

    Use the result as a context manager to stop it for sure.
    """
    return Child(argv, **kwargs).wait_ready(ready, timeout, sleep=sleep)


def _default_label(argv: list[str]) -> str:
    scripts = [a for a in argv[1:] if a.endswith(".py")]
    if scripts:
        return os.path.basename(scripts[0])
    if len(argv) > 2 and argv[1] == "-m":
        return f"{os.path.basename(argv[0])} -m {argv[2]}"
    return os.path.basename(argv[0]) if argv else "child"


@atexit.register
def _stop_leftovers() -> None:
    for child in list(_running):
        child.stop(grace=0, timeout=1)


def children(pid: int) -> set[int]:
    """The process ids of ``pid``'s live children (zombies left out); Linux's ``/proc``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, parent = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if parent == str(pid) and state != "Z":
            found.add(int(entry))
    return found
