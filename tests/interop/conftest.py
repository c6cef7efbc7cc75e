"""Fixtures for the Twisted interop suite.

Twisted runs in subprocesses (twisted_server.py / twisted_client.py), started
and stopped by ``pbgreen.testing.processes``; pbgreen runs in the pytest
process. Waiting on a Twisted *client* process must not block the gevent hub,
or the in-process pbgreen server could never answer it: so those waits poll
the process with ``gevent.sleep`` under a deadline (``Child.wait(sleep=)``).
(``gevent.subprocess`` is avoided on purpose: its SIGCHLD watcher reaps every
child of the process, including the stdlib subprocesses other suites start.)
"""

import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import gevent
import greenlet
import pytest

import pbgreen as pb
from pbgreen.testing.processes import Child

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "twisted_server.py"
CLIENT_SCRIPT = HERE / "twisted_client.py"
LOGIN_SERVER_SCRIPT = HERE / "twisted_login_server.py"
LOGIN_CLIENT_SCRIPT = HERE / "twisted_login_client.py"
START_DEADLINE = 20.0  # seconds for a Twisted process to start listening
CLIENT_DEADLINE = 30.0  # seconds for a whole Twisted client scenario


# --- the pbgreen side of the shared error module --------------------------------
# twisted_common.py raises interop_errors.MyError (a twisted pb.Error); this is
# the same qualified name as a pbgreen.Error subclass, as a user would define it
# in a module of that name.

interop_errors = types.ModuleType("interop_errors")


class MyError(pb.Error):
    __module__ = "interop_errors"


interop_errors.MyError = MyError
sys.modules.setdefault("interop_errors", interop_errors)


@pytest.fixture
def my_error():
    """The pbgreen.Error subclass named ``interop_errors.MyError``."""
    return MyError


def _load(name):
    spec = importlib.util.spec_from_file_location(name, HERE / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_values = _load("interop_values")


@pytest.fixture
def values():
    """The interop_values module: basic_values(), same(), mismatches()."""
    return _values


@pytest.fixture
def wait_for():
    """wait_for(predicate, deadline=10) -> bool, polling cooperatively."""

    def wait_for(predicate, deadline=10.0, interval=0.02):
        end = time.monotonic() + deadline
        while True:
            if predicate():
                return True
            if time.monotonic() > end:
                return False
            gevent.sleep(interval)

    return wait_for


def _open_sockets():
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets.add(target)
    return sockets


def _live_greenlets():
    hub = gevent.get_hub()
    return {
        g
        for g in gc.get_objects()
        # Greenlets of this thread's hub (other threads, such as gevent's
        # resolver pool, have hubs of their own).
        if isinstance(g, greenlet.greenlet) and not g.dead and g.parent is hub
    }


@pytest.fixture(autouse=True)
def no_leaks(wait_for):
    """Each test ends with no sockets and no greenlets it made still open."""
    sockets_before = _open_sockets()
    greenlets_before = _live_greenlets()
    yield

    def clean():
        gc.collect()
        return (
            _open_sockets() <= sockets_before
            and _live_greenlets() <= greenlets_before
        )

    if not wait_for(clean, deadline=5):
        leaked_sockets = _open_sockets() - sockets_before
        leaked_greenlets = _live_greenlets() - greenlets_before
        gevent.killall(list(leaked_greenlets), block=False)  # don't cascade
        pytest.fail(
            "test left behind %d socket(s) and greenlets %r"
            % (len(leaked_sockets), sorted(map(repr, leaked_greenlets)))
        )


# --- Twisted server process ----------------------------------------------------


class TwistedServer(Child):
    """A running twisted_server.py (or another ``script`` that prints
    ``PORT <n>`` first); ``host``/``port`` are where it listens. Its stdin
    is its life line: ``stop()`` closes it, then terminates, then kills."""

    host = "127.0.0.1"

    def __init__(self, script=SERVER_SCRIPT, args=()):
        super().__init__([sys.executable, str(script), *args], cwd=HERE, grace=5)
        self.wait_ready(timeout=START_DEADLINE)


@pytest.fixture(scope="module")
def twisted_server():
    """One Twisted PB server shared by a test module (every connection gets
    its own root object, so tests do not see each other's references)."""
    with TwistedServer() as server:
        yield server


@pytest.fixture
def fresh_twisted_server():
    """A Twisted PB server of this test's own, for tests that kill it."""
    with TwistedServer() as server:
        yield server


@pytest.fixture(scope="module")
def twisted_login_server():
    """twisted_login_server.py: a Twisted PBServerFactory(portal) with a
    password checker (alice/secret, watcher/watch) and anonymous access."""
    with TwistedServer(script=LOGIN_SERVER_SCRIPT) as server:
        yield server


@pytest.fixture(scope="module")
def twisted_login_server_noanon():
    """twisted_login_server.py noanon: the same portal without a checker
    for anonymous credentials."""
    with TwistedServer(script=LOGIN_SERVER_SCRIPT, args=["noanon"]) as server:
        yield server


# --- Twisted client process -----------------------------------------------------


class TwistedClientRun:
    """twisted_client.py (or another client ``script``) running one scenario;
    ``result()`` waits for it cooperatively (the gevent hub keeps serving
    pbgreen meanwhile)."""

    def __init__(self, scenario, host, port, script=CLIENT_SCRIPT):
        self.scenario = scenario
        self.child = Child([sys.executable, str(script), scenario, host, str(port)],
                           stdin=subprocess.DEVNULL, cwd=HERE)

    def wait(self, deadline=CLIENT_DEADLINE):
        rc = self.child.wait(deadline, sleep=gevent.sleep)
        if rc is None:
            self.child.kill()
            raise AssertionError(
                "%s %s did not finish within %ss\n%s"
                % (self.child.label, self.scenario, deadline, self.child.describe())
            )
        return rc

    def result(self, deadline=CLIENT_DEADLINE):
        """The scenario's JSON result; fails the test if the client failed."""
        rc = self.wait(deadline)
        out = self.child.stdout
        err = self.child.stderr
        assert rc == 0, "%s %s exited %s\nstdout:\n%s\nstderr:\n%s" % (
            self.child.label,
            self.scenario,
            rc,
            out,
            err,
        )
        lines = out.strip().splitlines()
        assert lines, "%s %s printed nothing\nstderr:\n%s" % (
            self.child.label,
            self.scenario,
            err,
        )
        return json.loads(lines[-1])

    def kill(self):
        self.child.kill()


@pytest.fixture
def twisted_client():
    """start(scenario, host, port, script=twisted_client.py) -> TwistedClientRun;
    killed in teardown."""
    runs = []

    def start(scenario, host, port, script=CLIENT_SCRIPT):
        run = TwistedClientRun(scenario, host, port, script)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


# --- pbgreen server ---------------------------------------------------------------


@pytest.fixture
def serve_pbgreen():
    """serve(root, **kw) -> a started pb.PBServer on 127.0.0.1, port 0;
    every server is stopped in teardown."""
    servers = []

    def serve(root, **kwargs):
        server = pb.PBServer(root, port=0, host="127.0.0.1", **kwargs)
        server.start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop(timeout=5)
