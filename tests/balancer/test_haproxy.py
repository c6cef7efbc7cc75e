"""pbgreen behind a real HAProxy (TCP mode, PROXY protocol v2, health checks).

Two ``pbgreen serve --proxy-protocol`` processes behind HAProxy with the
configuration ``docs/deploying.md`` shows (see ``conftest.py``). Through the
balancer every PB flavor works, the servers see each client's own address
as ``conn.peer``, and both servers get connections. When one server is
killed with SIGKILL, reconnecting clients get either an answer or a pbgreen
connection error (never a hang), and each is served by the other server
again within two seconds; when one is stopped with SIGSTOP (alive to the
kernel, silent to PB), within four. One ``pbgreen serve --workers 2``
behind HAProxy reaches both workers, each seeing its clients' addresses.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import gevent
import gevent.event

import pbgreen as pb
from pbgreen.testing import haproxy
from pbgreen.testing.haproxy import HAProxy
from pbgreen.testing.processes import Child

import balanced_app  # noqa: F401  (registers Point and TallyCopy in this process)

DEPLOYING = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"
FAILOVER_BOUND = 2.0   # seconds from the kill to every client's first answer from the survivor
STUCK_BOUND = 4.0      # the same from a SIGSTOP: two failed health checks, 0.5 s apart, first
CALL_TIMEOUT = 1.0     # each client's call_timeout
HANG = 10.0            # no call or getRootObject may take longer than this
# What a call may raise while its server dies (docs/errors.md): every
# one of them is an OSError.
CONNECTION_ERRORS = (pb.PBConnectionLost, pb.DeadReferenceError, pb.CallTimeout, OSError)


def own_address(client_root: pb.RemoteReference) -> str:
    """This client's end of its TCP connection, as the server prints a peer address."""
    host, port = client_root.broker.sock.getsockname()[:2]
    return str((host, port))


def test_docs_show_the_config_the_tests_run():
    text = DEPLOYING.read_text()
    blocks = re.findall(r"```haproxy\n(.*?)```", text, re.S)
    assert blocks, f"{DEPLOYING} shows no ```haproxy block"
    assert blocks[0] == haproxy.CONFIG, (
        f"the HAProxy configuration in {DEPLOYING.name} differs from "
        "pbgreen.testing.haproxy.CONFIG, which the tests run: make them the same")


def test_calls_references_copies_and_caches_through_haproxy(balancer, backends, wait_until):
    pids = {child.pid for child in backends}
    clients = [pb.PBClient(*balancer.address, timeout=10) for _ in range(4)]
    try:
        by_server: dict[int, list[pb.RemoteReference]] = {}
        for client in clients:
            root = client.getRootObject()
            pid, peer = root.callRemote("whoami")
            assert pid in pids
            # The server sees this client's own address, not HAProxy's.
            assert peer == own_address(root)
            by_server.setdefault(pid, []).append(root)
            assert root.callRemote("echo", ["hello", 1, 2.5]) == ["hello", 1, 2.5]
        assert set(by_server) == pids, "HAProxy gave every connection to one server"

        # Two connections to one server process (4 connections, 2 servers).
        pid, (first, neighbour, *_) = next(
            (pid, roots) for pid, roots in by_server.items() if len(roots) >= 2)
        counter = first.callRemote("counter")            # a reference...
        assert counter.callRemote("add", 2) == (pid, 2)
        assert counter.callRemote("add", 3) == (pid, 5)  # ...to one object

        point = first.callRemote("point", 3, 4)          # a copy
        assert isinstance(point, balanced_app.Point)
        assert (point.x, point.y) == (3, 4)

        # A cache held through one connection follows changes made through
        # another connection to the same server process.
        tally = first.callRemote("tally")
        changed = neighbour.callRemote("bump")
        wait_until(lambda: tally.value == changed, timeout=5,
                   message=lambda: f"the cache shows {tally.value}, not {changed}")

        # HAProxy's health checks (a PROXY v2 LOCAL header, the greeting,
        # then a close) are nothing to warn about.
        for child in backends:
            assert not re.search(r"WARNING|ERROR|Traceback", child.stderr), child.stderr
    finally:
        for client in clients:
            client.close()


def test_workers_behind_haproxy_see_each_client(serve_backend):
    # One `pbgreen serve --workers 2 --proxy-protocol` behind HAProxy: the
    # connections reach both worker processes, and each reports its
    # client's own address.
    server = serve_backend("--workers", "2")
    with HAProxy([("127.0.0.1", server.port)], sleep=gevent.sleep) as proxy:
        workers = set()
        clients = []
        try:
            deadline = time.monotonic() + 15
            while len(workers) < 2 and time.monotonic() < deadline:
                clients.append(pb.PBClient(*proxy.address, timeout=10))
                root = clients[-1].getRootObject()
                pid, peer = root.callRemote("whoami")
                assert peer == own_address(root)
                assert pid != server.pid, "the supervisor served a connection itself"
                workers.add(pid)
            assert len(workers) == 2, f"{len(clients)} connections all reached one worker"
        finally:
            for client in clients:
                client.close()


class Caller:
    """One reconnecting client calling ``whoami`` in a loop, noting who answered and when."""

    def __init__(self, address, stop: gevent.event.Event) -> None:
        self.client = pb.PBClient(*address, timeout=HANG, call_timeout=CALL_TIMEOUT,
                                  reconnect=True)
        self.stop = stop
        self.answers: list[tuple[float, int]] = []   # (monotonic time, server pid)
        self.errors: list[BaseException] = []
        self.answered = gevent.event.Event()
        self.greenlet = gevent.spawn(self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with gevent.Timeout(HANG, AssertionError(f"a call hung for {HANG} s")):
                    pid, _ = self.client.getRootObject().callRemote("whoami")
            except CONNECTION_ERRORS as error:
                self.errors.append(error)
            else:
                self.answers.append((time.monotonic(), pid))
                self.answered.set()
            self.stop.wait(0.02)   # pace the loop; the machine is shared

    def first_answer_from(self, pid: int, since: float) -> float | None:
        return next((when for when, who in self.answers if who == pid and when >= since), None)


def fail_over(balancer, backends, fault, wait_until) -> list[float]:
    """Six reconnecting clients call in a loop; ``fault(victim)`` hits one server.

    Returns, per client, the seconds from the fault to its first answer from
    the other server. Every call meanwhile answered or raised a connection
    error (anything else, or a call hanging, fails the test).
    """
    stop = gevent.event.Event()
    callers = [Caller(balancer.address, stop) for _ in range(6)]
    try:
        for caller in callers:
            assert caller.answered.wait(timeout=15), "a client never got a first answer"
        victim, survivor = backends
        assert {caller.answers[-1][1] for caller in callers} == {victim.pid, survivor.pid}

        hit_at = time.monotonic()
        fault(victim)
        wait_until(lambda: all(caller.first_answer_from(survivor.pid, hit_at) is not None
                               for caller in callers), timeout=10,
                   message="some clients were never served by the other server")
        stop.set()
        gevent.joinall([caller.greenlet for caller in callers], timeout=HANG + 5,
                       raise_error=True)
        delays = [caller.first_answer_from(survivor.pid, hit_at) for caller in callers]
        return [round(when - hit_at, 2) for when in delays]
    finally:
        stop.set()
        gevent.killall([caller.greenlet for caller in callers], timeout=5)
        for caller in callers:
            caller.client.close()


def test_clients_fail_over_to_the_other_server_when_one_is_killed(balancer, backends,
                                                                   wait_until):
    delays = fail_over(balancer, backends, Child.kill, wait_until)
    assert max(delays) <= FAILOVER_BOUND, (
        f"seconds from the SIGKILL to each client's first answer from the other server: "
        f"{delays}")


def test_clients_leave_a_server_that_is_stuck(balancer, backends, wait_until):
    # SIGSTOP: the kernel still accepts connections for the process, but it
    # never answers. The health check (no PB greeting) marks it down and
    # HAProxy closes its connections, so its clients reconnect elsewhere.
    victim = backends[0]
    try:
        delays = fail_over(balancer, backends, lambda child: child.signal(signal.SIGSTOP),
                           wait_until)
    finally:
        victim.signal(signal.SIGCONT)
    assert max(delays) <= STUCK_BOUND, (
        f"seconds from the SIGSTOP to each client's first answer from the other server: "
        f"{delays}")
