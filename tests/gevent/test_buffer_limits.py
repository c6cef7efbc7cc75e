"""The high-water mark on what a connection queues for its peer, at and past the limit.

A caller may queue calls while at most ``high_water`` bytes wait for a peer
that does not read; past it, the next call waits. A cache holder that falls
more than four marks behind is dropped and its owner gets ``stoppedObserving``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap

import gevent
import pytest
from gevent import socket
from gevent.event import Event

import pbgreen as pb
from pbgreen import banana
from pbgreen.testing.processes import start

HIGH_WATER = 64 * 1024


def _silent_pb_server(listener, ready: Event, stop: Event) -> None:
    """Accept, do the PB handshake, then never read again."""
    conn, _ = listener.accept()
    with conn:
        conn.sendall(banana.encode([b"pb", b"none"], vocab=False))
        conn.recv(64)  # the dialect choice (and maybe the version)
        conn.sendall(banana.encode([b"version", 6]))
        ready.set()
        stop.wait(30)


def test_calls_wait_once_more_than_high_water_bytes_are_queued():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ready, stop = Event(), Event()
    server = gevent.spawn(_silent_pb_server, listener, ready, stop)
    client = pb.PBClient("127.0.0.1", listener.getsockname()[1], timeout=10,
                         high_water=HIGH_WATER)
    root = client.getRootObject()
    conn = root.broker
    assert ready.wait(10)
    started: list[int] = []  # bytes queued when each call started
    sent: list[int] = []     # ... for each call that was queued without waiting
    progress = Event()
    chunk = b"x" * 16 * 1024

    def sender():
        while True:
            started.append(conn.buffered)
            root.callRemoteAsync("take", chunk)
            sent.append(started[-1])
            progress.set()

    flooding = gevent.spawn(sender)
    try:
        # The peer never reads: the kernel's buffers fill, then ours; the
        # sender stops making progress when ours passes the mark.
        while progress.wait(2):
            progress.clear()
        assert len(started) == len(sent) + 1, "the sender should be waiting in one call"
        assert started[-1] > HIGH_WATER, "it waits only past the mark"
        assert started[-1] <= HIGH_WATER + len(chunk) + 1024, "and no later than one call past"
        over = [b for b in sent if b > HIGH_WATER]
        assert not over, f"calls were queued past the mark: {over[:5]}"
        assert max(sent) > HIGH_WATER - len(chunk) - 1024, "the mark was reached, not skipped"
        client.close()
        flooding.join(10)
        assert isinstance(flooding.exception, pb.DeadReferenceError)
    finally:
        flooding.kill()
        client.close()
        stop.set()
        server.join(10)
        listener.close()


HOLDER = textwrap.dedent("""
    import sys
    import gevent
    import pbgreen as pb

    class Copy(pb.RemoteCache):
        def observe_update(self, data):
            pass

    pb.setUnjellyableForClass("limits.Shared", Copy)
    root = pb.connect("127.0.0.1", int(sys.argv[1]), timeout=10)
    cache = root.callRemote("get")
    print("READY", flush=True)
    sys.stdin.read()
""")


class Shared(pb.Cacheable):
    def __init__(self):
        self.observers = []
        self.stopped = []
        self.gone = Event()

    def getTypeToCopyFor(self, perspective):
        return "limits.Shared"

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {}

    def stoppedObserving(self, perspective, observer):
        self.stopped.append(observer)
        self.gone.set()


class Owner(pb.Root):
    def __init__(self, shared):
        self.shared = shared
        self.connections = []

    def rootObject(self, connection):
        self.connections.append(connection)
        return self

    def remote_get(self):
        return self.shared


@pytest.mark.timeout(90)
def test_a_cache_holder_four_marks_behind_is_dropped(pb_server, caplog):
    shared = Shared()
    owner = Owner(shared)
    server = pb_server(owner, high_water=HIGH_WATER)
    holder = start([sys.executable, "-c", HOLDER, str(server.address[1])], ready="^READY$",
                   sleep=gevent.sleep)
    try:
        (conn,) = owner.connections
        (observer,) = shared.observers
        os.kill(holder.proc.pid, signal.SIGSTOP)  # the holder stops reading
        update = b"u" * 1024
        before: list[int] = []
        with caplog.at_level(logging.WARNING, logger="pbgreen"):
            while conn.connected and len(before) < 200_000:
                before.append(conn.buffered)
                observer.callRemote("update", update)  # never waits, never raises
                if len(before) % 16 == 0:
                    gevent.idle()  # let the writer run, as a real server would
            assert shared.gone.wait(10)
        assert not conn.connected, "the holder should have been dropped"
        assert shared.stopped == [observer]
        limit = 4 * HIGH_WATER
        assert before[-1] <= limit, "dropped only past four marks"
        assert max(before) <= limit
        assert max(before) > limit - 2 * len(update), "not dropped before the limit"
        assert "dropping cache holder" in caplog.text
        observer.callRemote("update", update)  # a dropped holder is skipped, not raised
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)
        holder.stop()
