"""Fixtures for the ``pbgreen`` command-line tests: every command runs as a real process.

``run_cli(*args, cwd=None, env=None, timeout=30)``
    Run ``python -m pbgreen ARGS`` to the end (under a deadline); the
    ``subprocess.CompletedProcess`` with text stdout and stderr.
``serve(target, *extra)``
    Start ``pbgreen serve TARGET --port 0 EXTRA...`` in ``tmp_path`` (where
    ``shopapp.py`` and ``slowapp.py`` are written first) and wait for its
    ``pbgreen: serving ... on 127.0.0.1:PORT`` line; returns ``(Child, port)``.
    Every server it started is stopped after the test.
``one_line_error(result, *names, status=2)``
    The everyday-mistake contract: the exit status, nothing on stdout, one
    line on stderr, no traceback, and every one of ``names`` in that line;
    returns the line.
``clean_env``
    ``os.environ`` without ``PBGREEN_PASSWORD``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import Callable, Iterator

import pytest

from pbgreen.testing.processes import Child, start

SHOP_APP = textwrap.dedent('''
    import pbgreen as pb

    class Shop(pb.Root):
        def __init__(self):
            self.items = {}

        def remote_add(self, name, price=0):
            self.items[name] = price
            return sorted(self.items.items())

        def remote_echo(self, *args):
            return list(args)

        def remote_fail(self):
            raise ValueError("out of stock")

    shop = Shop()

    def make_shop():
        return Shop()
''')

# A root whose methods can hang, a portal, and a copyable class that
# `pbgreen call` only accepts with --import slowapp.
SLOW_APP = textwrap.dedent('''
    import sys

    import gevent

    import pbgreen as pb

    class Point(pb.Copyable, pb.RemoteCopy):
        def __init__(self, x=0, y=0):
            self.x, self.y = x, y

        def __repr__(self):
            return f"Point({self.x}, {self.y})"

    pb.setUnjellyableForClass(Point, Point)

    class Slow(pb.Root):
        def remote_hang(self):
            try:
                gevent.sleep(3600)
            finally:
                print("HANG ENDED", flush=True)

        def remote_work(self, seconds):
            print("WORK STARTED", flush=True)
            gevent.sleep(seconds)
            return "work done"

        def remote_point(self):
            return Point(3, 4)

        def remote_fail(self):
            raise ValueError("broken on purpose")

    class Account(pb.Avatar):
        def __init__(self, name):
            self.name = name

        def perspective_whoami(self):
            return self.name.decode()

    class Realm:
        def requestAvatar(self, avatarId, mind, *interfaces):
            return interfaces[0], Account(avatarId), lambda: None

    portal = pb.Portal(Realm(), [pb.InMemoryPasswordChecker(alice=b"s3cret")])
''')

SERVING = r"^pbgreen: serving {target} on (?:127\.0\.0\.1|\[::1\]):(\d+)\b"


def _run(*args: str, cwd=None, env=None, timeout: float = 30,
         stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbgreen", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout, stdin=stdin)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run


@pytest.fixture
def app_dir(tmp_path):
    """tmp_path with shopapp.py and slowapp.py in it."""
    (tmp_path / "shopapp.py").write_text(SHOP_APP)
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    return tmp_path


@pytest.fixture
def serve(app_dir) -> Iterator[Callable[..., tuple[Child, int]]]:
    started: list[Child] = []

    def start_one(target: str, *extra: str, env=None) -> tuple[Child, int]:
        process = start([sys.executable, "-m", "pbgreen", "serve", target, "--port", "0", *extra],
                        ready=SERVING.format(target=re.escape(target)), timeout=20, cwd=app_dir,
                        env=env)
        started.append(process)
        assert process.stdout.startswith("pbgreen: serving "), process.stdout  # its first line
        return process, process.port

    yield start_one
    for process in started:
        process.stop(timeout=10)


def _one_line_error(result: subprocess.CompletedProcess[str], *names: str,
                    status: int = 2) -> str:
    """The exit status, one line on stderr naming every one of ``names``; that line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    return _one_line_error


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without PBGREEN_PASSWORD."""
    env = dict(os.environ)
    env.pop("PBGREEN_PASSWORD", None)
    return env
