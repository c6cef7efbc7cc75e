"""Suite-wide settings.

The leak check on connections, waiting calls, greenlets and sockets is
pbgreen's own pytest plugin (``pbgreen.testing``, enabled for every test by
``usefixtures = pb_leak_check`` in pyproject.toml). This file adds what only
this suite needs: no test may leave a child process behind (the interop and
example tests start many).
"""

from __future__ import annotations

import os
import time
from typing import Iterator

import gevent
import pytest

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
