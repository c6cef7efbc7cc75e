"""``PBClient(reconnect=True)`` against a real server process killed and restarted.

The server is a child process (``pbgreen.testing.processes``) on a fixed
port on 127.0.0.1, so it can be killed with SIGKILL (no FIN from a graceful
close, no goodbye) and started again on the same port while a client in
this process keeps calling. The server prints one line per connection
(``CONNECTION``), per login (``LOGIN <name>``) and per call (``CALL
<token>``), so the test counts on the server side what the client cannot
see: connection attempts after ``close()``, logins, calls run twice.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time

import gevent
import gevent.event
import pytest

import pbgreen as pb
from pbgreen.testing.processes import start

HOST = "127.0.0.1"

SERVER = r"""
import sys

import gevent

import pbgreen as pb

port, mode = int(sys.argv[1]), sys.argv[2]


class Root(pb.Root):
    def rootObject(self, broker):
        print("CONNECTION", flush=True)
        return self

    def remote_echo(self, token):
        print("CALL", token, flush=True)
        return token

    def remote_slow(self, token, seconds):
        print("CALL", token, flush=True)
        gevent.sleep(seconds)
        return token


class User(pb.Avatar):
    def __init__(self, name, mind):
        self.name, self.mind = name, mind

    def perspective_echo(self, token):
        print("CALL", token, flush=True)
        return token

    def perspective_whoami(self):
        return self.name

    def perspective_poke(self):
        return self.mind.callRemote("hello", self.name)


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        print("LOGIN", avatar_id.decode(), flush=True)
        return interfaces[0], User(avatar_id, mind), lambda: None


if mode == "portal":
    root = pb.Portal(Realm(), [pb.InMemoryPasswordChecker(alice=b"secret")])
else:
    root = Root()
server = pb.PBServer(root, port=port, host="127.0.0.1")
server.start()
print("PORT", server.address[1], flush=True)
server.serve_forever()
"""

ALLOWED = (pb.PBConnectionLost, pb.DeadReferenceError, pb.CallTimeout)
CALL_BOUND = 6.0  # call_timeout is 2: a call still waiting after 6 s hangs


def free_port() -> int:
    """A port nobody listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """The server process on one fixed port: start, SIGKILL, start again."""

    def __init__(self, script, port: int, mode: str) -> None:
        self.script, self.port, self.mode = script, port, mode
        self.child = None
        self.children = []

    def start(self):
        deadline = time.monotonic() + 10
        while True:  # the port may linger for a moment after a kill
            try:
                self.child = start([sys.executable, str(self.script), str(self.port), self.mode],
                                   sleep=gevent.sleep, stdin=subprocess.DEVNULL,
                                   label=f"{self.mode} server", timeout=20)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                gevent.sleep(0.1)
        self.children.append(self.child)
        assert self.child.port == self.port
        return self.child

    def kill(self) -> None:
        self.child.kill()

    def lines(self, prefix: str, child=None) -> list[str]:
        child = child or self.child
        return [line for line in child.stdout.splitlines() if line.startswith(prefix)]

    def stop_all(self) -> None:
        for child in self.children:
            child.kill()


@pytest.fixture
def server_factory(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    servers = []

    def make(mode: str = "root", port: int | None = None) -> Server:
        server = Server(script, port or free_port(), mode)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop_all()


class Caller:
    """Calls ``echo(token)`` in a loop with a fresh token each time; records every outcome."""

    tokens = itertools.count()

    def __init__(self, get_ref, pause: float = 0.01, sticky: bool = False,
                 slow: float | None = None) -> None:
        self.get_ref = get_ref
        self.pause = pause
        self.sticky = sticky  # keep one reference until it fails (as an application would)
        self.slow = slow  # call slow(token, seconds) instead of echo(token)
        self.outcomes: list[tuple[str, object, float]] = []  # (token, answer or exception, s)
        self.hung: list[str] = []
        self.stopping = False
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        ref = None
        while not self.stopping:
            if ref is None or not self.sticky:
                try:
                    ref = self.get_ref()
                except TimeoutError:  # reconnection took longer than `timeout`: not a call
                    continue
            token = f"t{next(self.tokens)}"
            started = time.monotonic()
            try:
                with gevent.Timeout(CALL_BOUND):
                    if self.slow is None:
                        outcome = ref.callRemote("echo", token)
                    else:
                        outcome = ref.callRemote("slow", token, self.slow)
            except gevent.Timeout:
                self.hung.append(token)
                outcome = "HUNG"
            except Exception as exc:  # checked against ALLOWED afterwards
                outcome = exc
            self.outcomes.append((token, outcome, time.monotonic() - started))
            if isinstance(outcome, pb.DeadReferenceError) or outcome == "HUNG" \
                    or (not self.sticky and isinstance(outcome, BaseException)):
                ref = None
            gevent.sleep(self.pause)

    def stop(self) -> None:
        self.stopping = True
        self.greenlet.join(CALL_BOUND + 12)
        assert self.greenlet.dead

    def check(self) -> None:
        assert not self.hung, f"calls hung: {self.hung}"
        wrong = [(t, o) for t, o, _ in self.outcomes
                 if not isinstance(o, ALLOWED) and o != t]
        assert not wrong, f"calls answered wrongly or raised something else: {wrong[:10]}"
        assert self.answered(), "no call succeeded at all"

    def answered(self) -> list[str]:
        return [t for t, o, _ in self.outcomes if o == t]

    def failed(self) -> list[tuple[str, object]]:
        return [(t, o) for t, o, _ in self.outcomes if isinstance(o, BaseException)]


def serving_again(client, bound: float = 10.0) -> float:
    """Seconds until a call through ``client.getRootObject()`` succeeds."""
    started = time.monotonic()
    while True:
        try:
            with gevent.Timeout(3):
                if client.getRootObject().callRemote("echo", "probe") == "probe":
                    return time.monotonic() - started
        except (gevent.Timeout, *ALLOWED, TimeoutError):
            pass
        assert time.monotonic() - started < bound, "the client never served again"
        gevent.sleep(0.005)


def no_call_run_twice(*children) -> None:
    calls = [line for child in children for line in child.stdout.splitlines()
             if line.startswith("CALL t")]
    assert len(calls) == len(set(calls)), "a call ran twice on the server"


# ------------------------------------------------------------------ root servers


def test_calls_survive_a_killed_and_restarted_server(server_factory):
    server = server_factory("root")
    first = server.start()
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    try:
        connected = []
        client.on_connect(connected.append)
        assert len(connected) == 1  # at registration, at once
        old_root = client.getRootObject()
        assert connected[0] is old_root

        callers = [Caller(client.getRootObject), Caller(client.getRootObject, sticky=True),
                   Caller(client.getRootObject, slow=0.2, pause=0)]
        gevent.sleep(0.5)
        before_kill = sum(len(c.answered()) for c in callers)
        assert before_kill > 0
        server.kill()
        gevent.sleep(1.0)
        second = server.start()
        back = time.monotonic()
        delay = serving_again(client)
        assert time.monotonic() - back < 2.0, f"serving again only {delay:.2f} s after restart"
        gevent.sleep(0.5)  # the loop calls through the new connection for a while
        for caller in callers:
            caller.stop()
        for caller in callers:
            caller.check()
        assert sum(len(c.answered()) for c in callers) > before_kill  # after the restart too
        errors = {type(e) for c in callers for _, e in c.failed()}
        # the slow call running at the kill lost its connection; the sticky
        # caller's next call went through a dead reference
        assert pb.PBConnectionLost in errors, errors
        assert pb.DeadReferenceError in errors, errors
        no_call_run_twice(first, second)
        # the client reconnected once: once at registration, once after
        assert len(connected) == 2
        assert connected[1] is client.getRootObject()
        assert connected[1] is not old_root
        # references from the old connection stay dead
        with pytest.raises(pb.DeadReferenceError):
            with gevent.Timeout(3):
                old_root.callRemote("echo", "old")
        assert len(server.lines("CONNECTION", second)) == 1
    finally:
        client.close()


def test_a_second_restart_is_survived_as_well(server_factory):
    server = server_factory("root")
    first = server.start()
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    try:
        connected = []
        client.on_connect(connected.append)
        caller = Caller(client.getRootObject)
        children = [first]
        for _ in range(2):
            gevent.sleep(0.3)
            server.kill()
            gevent.sleep(0.3)
            children.append(server.start())
            back = time.monotonic()
            serving_again(client)
            assert time.monotonic() - back < 2.0
        gevent.sleep(0.3)
        caller.stop()
        caller.check()
        no_call_run_twice(*children)
        assert len(connected) == 3
        assert connected[-1] is client.getRootObject()
    finally:
        client.close()


def test_close_during_reconnection_stops_reconnecting(server_factory):
    server = server_factory("root")
    server.start()
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    try:
        server.kill()
        gevent.sleep(0.6)  # the client is between attempts now
    finally:
        client.close()
    restarted = server.start()
    gevent.sleep(3.0)  # longer than any backoff step the client could have been in
    assert server.lines("CONNECTION", restarted) == []


def test_close_while_connected_stops_reconnecting(server_factory):
    server = server_factory("root")
    server.start()
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    assert client.getRootObject().callRemote("echo", "x") == "x"
    client.close()
    server.kill()
    restarted = server.start()
    gevent.sleep(2.0)
    assert server.lines("CONNECTION", restarted) == []


# ------------------------------------------------------------------ the first connection


def test_the_first_connection_waits_for_a_server_that_appears(server_factory):
    server = server_factory("root")
    started = time.monotonic()
    # The hub's timers count from its cached clock, which can lag behind
    # time.monotonic(): bring it up to date so the server starts 0.5 s after
    # ``started`` at the earliest.
    gevent.get_hub().loop.update_now()
    starter = gevent.spawn_later(0.5, server.start)
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    try:
        took = time.monotonic() - started
        assert 0.5 <= took < 5.0
        assert client.getRootObject().callRemote("echo", "x") == "x"
    finally:
        client.close()
        starter.join(10)


def test_the_first_connection_gives_up_after_timeout(server_factory):
    server = server_factory("root")  # never started: nothing listens on its port
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        pb.PBClient(HOST, server.port, reconnect=True, timeout=1, call_timeout=2)
    took = time.monotonic() - started
    assert took < 2.0, took
    assert f"{server.port}" in str(caught.value)


# ------------------------------------------------------------------ portal servers


class Mind(pb.Referenceable):
    def remote_hello(self, name):
        return b"hi " + name


def test_the_client_logs_in_again_by_itself(server_factory):
    server = server_factory("portal")
    first = server.start()
    client = pb.PBClient(HOST, server.port, reconnect=True, timeout=10, call_timeout=2)
    try:
        mind = Mind()
        avatar = client.login(pb.UsernamePassword(b"alice", b"secret"), client=mind)
        assert avatar.callRemote("whoami") == b"alice"
        assert avatar.callRemote("poke") == b"hi alice"
        seen = []
        again = gevent.event.Event()
        client.on_connect(lambda obj: (seen.append(obj), again.set()))
        assert seen == [avatar]  # at registration: the avatar, once logged in
        assert first.wait_for(lambda out: out.count("LOGIN alice") == 1, timeout=5)

        again.clear()
        caller = Caller(lambda: client.login(pb.UsernamePassword(b"alice", b"secret"),
                                             client=mind))
        gevent.sleep(0.3)
        server.kill()
        gevent.sleep(0.5)
        second = server.start()
        back = time.monotonic()
        assert again.wait(5), "on_connect did not run after the reconnection"
        assert time.monotonic() - back < 2.0
        # logged in again by itself, once
        assert second.wait_for(lambda out: "LOGIN alice" in out, timeout=5)
        new_avatar = seen[-1]
        assert len(seen) == 2 and new_avatar is not avatar
        # login with the same credentials and mind: the current avatar, no second login
        same = client.login(pb.UsernamePassword(b"alice", b"secret"), client=mind)
        assert same is new_avatar
        assert same.callRemote("whoami") == b"alice"
        assert same.callRemote("poke") == b"hi alice"  # the mind was handed over again
        gevent.sleep(0.5)
        caller.stop()
        caller.check()
        no_call_run_twice(first, second)
        assert len(server.lines("LOGIN", second)) == 1, second.stdout
        assert len(server.lines("LOGIN", first)) == 1, first.stdout
        with pytest.raises(pb.DeadReferenceError):
            with gevent.Timeout(3):
                avatar.callRemote("whoami")
    finally:
        client.close()
