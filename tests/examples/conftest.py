"""Fixtures that run the scripts in examples/ as real processes.

A server script is started on port 0 and announces `listening on PORT`;
its stdout and stderr are collected by two threads, so a test can wait for
a line with a deadline instead of sleeping. Every server a test starts is
stopped (terminated if need be) and reaped when the test ends.
"""
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STARTUP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ExampleServer:
    """One server script running in a subprocess."""

    def __init__(self, script: str, *args: str):
        self.script = script
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=EXAMPLES,
        )
        self._changed = threading.Condition()
        self._out: list[str] = []
        self._err: list[str] = []
        self._open = 2
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.port = self._wait_port()

    def _drain(self, pipe, lines):
        for line in pipe:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._err)

    def _wait_port(self) -> int:
        def port():
            for line in self._out:
                m = re.fullmatch(r"listening on (\d+)", line.strip())
                if m:
                    return int(m.group(1))
            return None if self._open else -1

        with self._changed:
            found = self._changed.wait_for(port, timeout=STARTUP_TIMEOUT)
        if found is None or found == -1:
            self.stop()
            what = "exited" if found == -1 else f"said nothing for {STARTUP_TIMEOUT}s"
            pytest.fail(
                f"{self.script} {what} before `listening on PORT`\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return found

    def wait_for_stderr(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until `text` has appeared on the server's stderr."""
        with self._changed:
            return self._changed.wait_for(lambda: text in "".join(self._err), timeout=timeout)

    def wait_for_stdout(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until `text` has appeared on the server's stdout."""
        with self._changed:
            return self._changed.wait_for(lambda: text in "".join(self._out), timeout=timeout)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait for the server to exit by itself; its status, or None."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Terminate the server if it still runs; reap it; collect all output."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(timeout=STOP_TIMEOUT)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _run_client(script: str, port: int, *args: str, host: str = "127.0.0.1"):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), host, str(port), *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        cwd=EXAMPLES,
    )


@pytest.fixture
def start_server():
    """Start example servers; every one is stopped when the test ends."""
    servers: list[ExampleServer] = []

    def start(script: str, *args: str) -> ExampleServer:
        server = ExampleServer(script, *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def run_client():
    """run_client(script, port, *args, host=...) runs a client script to the
    end (killed after CLIENT_TIMEOUT) and returns its CompletedProcess."""
    return _run_client


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES
