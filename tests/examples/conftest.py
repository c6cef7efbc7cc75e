"""Fixtures that run the scripts in examples/ as real processes.

A server script is started on port 0 and announces `listening on PORT`
(pbgreen.testing.processes collects its output, so a test can wait for a
line with a deadline instead of sleeping). Every server a test starts is
stopped (terminated if need be) and reaped when the test ends.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from pbgreen.testing.processes import Child, ChildError, start

from example_output import CLIENT_TIMEOUT, READY, STARTUP_TIMEOUT, STOP_TIMEOUT

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start_example(script: str, *args: str) -> Child:
    """Start one server script on port 0; fail the test if it never listens."""
    try:
        return start([sys.executable, str(EXAMPLES / script), "0", *args], ready=READY,
                     timeout=STARTUP_TIMEOUT, cwd=EXAMPLES)
    except ChildError as exc:
        pytest.fail(str(exc), pytrace=False)


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
    servers: list[Child] = []

    def start_one(script: str, *args: str) -> Child:
        server = start_example(script, *args)
        servers.append(server)
        return server

    yield start_one
    for server in servers:
        server.stop(timeout=STOP_TIMEOUT)


@pytest.fixture
def run_client():
    """run_client(script, port, *args, host=...) runs a client script to the
    end (killed after CLIENT_TIMEOUT) and returns its CompletedProcess."""
    return _run_client


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES
