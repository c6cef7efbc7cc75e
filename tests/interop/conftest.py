"""Fixtures for the Twisted interop suite.

Twisted runs in subprocesses (twisted_server.py / twisted_client.py); pbgreen
runs in the pytest process. Waiting on a Twisted *client* process must not
block the gevent hub, or the in-process pbgreen server could never answer it:
so those waits poll the process with ``gevent.sleep`` under a deadline.
(``gevent.subprocess`` is avoided on purpose: its SIGCHLD watcher reaps every
child of the process, including the stdlib subprocesses other suites start.)
"""

import gc
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
import types
from pathlib import Path

import gevent
import greenlet
import pytest

import pbgreen as pb

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


class TwistedServer:
    """A running twisted_server.py (or another ``script`` that prints
    ``PORT <n>`` first); ``host``/``port`` are where it listens."""

    host = "127.0.0.1"

    def __init__(self, stderr_path, script=SERVER_SCRIPT, args=()):
        self.stderr_path = stderr_path
        self.script_name = Path(script).name
        self._stderr = open(stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(HERE),
        )
        try:
            self.port = self._read_port()
        except BaseException:
            self.stop()
            raise

    def _read_port(self):
        deadline = time.monotonic() + START_DEADLINE
        fd = self.proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    "%s printed no port within %ss\n%s"
                    % (self.script_name, START_DEADLINE, self.stderr_text())
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(
                        "%s exited before printing its port (rc=%s)\n%s"
                        % (self.script_name, self.proc.wait(), self.stderr_text())
                    )
                data += chunk
        line = data.split(b"\n", 1)[0].decode()
        word, port = line.split()
        assert word == "PORT", line
        return int(port)

    def stderr_text(self):
        self._stderr.flush()
        return Path(self.stderr_path).read_text(errors="replace")

    def kill(self):
        """Kill the server at once (SIGKILL) and reap it."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        """Ask politely (close stdin), then SIGTERM, then SIGKILL; always reap."""
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for f in (proc.stdin, proc.stdout, self._stderr):
            if f is not None and not f.closed:
                f.close()


@pytest.fixture(scope="module")
def twisted_server(tmp_path_factory):
    """One Twisted PB server shared by a test module (every connection gets
    its own root object, so tests do not see each other's references)."""
    server = TwistedServer(tmp_path_factory.mktemp("twisted") / "server.err")
    yield server
    server.stop()


@pytest.fixture
def fresh_twisted_server(tmp_path):
    """A Twisted PB server of this test's own, for tests that kill it."""
    server = TwistedServer(tmp_path / "server.err")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def twisted_login_server(tmp_path_factory):
    """twisted_login_server.py: a Twisted PBServerFactory(portal) with a
    password checker (alice/secret, watcher/watch) and anonymous access."""
    server = TwistedServer(
        tmp_path_factory.mktemp("login") / "server.err", script=LOGIN_SERVER_SCRIPT
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def twisted_login_server_noanon(tmp_path_factory):
    """twisted_login_server.py noanon: the same portal without a checker
    for anonymous credentials."""
    server = TwistedServer(
        tmp_path_factory.mktemp("login_noanon") / "server.err",
        script=LOGIN_SERVER_SCRIPT,
        args=["noanon"],
    )
    yield server
    server.stop()


# --- Twisted client process -----------------------------------------------------


class TwistedClientRun:
    """twisted_client.py (or another client ``script``) running one scenario;
    ``result()`` waits for it cooperatively (the gevent hub keeps serving
    pbgreen meanwhile)."""

    def __init__(self, scenario, host, port, directory, script=CLIENT_SCRIPT):
        self.scenario = scenario
        self.script_name = Path(script).name
        self._out_path = directory / ("%s.out" % scenario)
        self._err_path = directory / ("%s.err" % scenario)
        with open(self._out_path, "wb") as out, open(self._err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), scenario, host, str(port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(HERE),
            )

    def wait(self, deadline=CLIENT_DEADLINE):
        end = time.monotonic() + deadline
        while self.proc.poll() is None:
            if time.monotonic() > end:
                self.kill()
                raise AssertionError(
                    "%s %s did not finish within %ss\nstderr:\n%s"
                    % (self.script_name, self.scenario, deadline, self._err_path.read_text())
                )
            gevent.sleep(0.02)
        return self.proc.returncode

    def result(self, deadline=CLIENT_DEADLINE):
        """The scenario's JSON result; fails the test if the client failed."""
        rc = self.wait(deadline)
        out = self._out_path.read_text()
        err = self._err_path.read_text()
        assert rc == 0, "%s %s exited %s\nstdout:\n%s\nstderr:\n%s" % (
            self.script_name,
            self.scenario,
            rc,
            out,
            err,
        )
        lines = out.strip().splitlines()
        assert lines, "%s %s printed nothing\nstderr:\n%s" % (
            self.script_name,
            self.scenario,
            err,
        )
        return json.loads(lines[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def twisted_client(tmp_path):
    """start(scenario, host, port, script=twisted_client.py) -> TwistedClientRun;
    killed in teardown."""
    runs = []

    def start(scenario, host, port, script=CLIENT_SCRIPT):
        run = TwistedClientRun(scenario, host, port, tmp_path, script)
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
