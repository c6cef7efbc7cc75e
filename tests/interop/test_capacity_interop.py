"""A real Twisted PB client against a pbgreen server at capacity.

``API.md`` ("Capacity"): a server already serving ``max_connections``
accepts the next connection and closes it at once, telling a pbgreen client
"server at capacity" "in a way a Twisted client simply sees as a refused
connection" -- never a hang. The server's refusal is a dialect offer of one
dialect nobody speaks (``["server at capacity"]``): Twisted's Banana finds
no dialect in common, logs that, and drops the connection; the Twisted
client's ``getRootObject()`` Deferred fails.

The Twisted client is a script written to the test's tmp_path; it prints
one JSON line with everything it saw (the Deferred's outcome, the factory's
connection-lost reasons, Twisted's log), so the test can report it.
"""

from __future__ import annotations

import logging
import time

import pbgreen as pb

CAPACITY_CLIENT = r'''
"""Usage: python capacity_client.py MODE HOST PORT (MODE: refused or served)."""
import json
import sys
import time

from twisted.internet import reactor
from twisted.python import log, reflect
from twisted.spread import pb

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.monotonic()
seen = {"mode": mode, "log": [], "lost": [], "failed": [], "outcome": None}


def since():
    return round(time.monotonic() - started, 3)


def observer(event):
    text = log.textFromEventDict(event)
    if text:
        seen["log"].append(text)


log.addObserver(observer)


class Factory(pb.PBClientFactory):
    def clientConnectionLost(self, connector, reason, reconnecting=0):
        seen["lost"].append({"type": reflect.qual(reason.type),
                             "message": reason.getErrorMessage(), "after": since()})
        return super().clientConnectionLost(connector, reason, reconnecting)

    def clientConnectionFailed(self, connector, reason):
        seen["failed"].append({"type": reflect.qual(reason.type),
                               "message": reason.getErrorMessage(), "after": since()})
        return super().clientConnectionFailed(connector, reason)


def got_root(root):
    seen["outcome"] = "root"
    seen["root_after"] = since()
    return root.callRemote("echo", "hello").addCallback(
        lambda answer: seen.__setitem__("echo", answer))


def failed(f):
    seen["outcome"] = "errback" if seen["outcome"] is None else seen["outcome"] + "+errback"
    seen["error"] = {"type": reflect.qual(f.type), "message": f.getErrorMessage(),
                     "after": since()}


def finish(_):
    factory.disconnect()
    reactor.callLater(0.3, reactor.stop)  # let connectionLost be reported


def too_slow():
    seen["outcome"] = "hung"
    reactor.stop()


factory = Factory()
reactor.connectTCP(host, port, factory, timeout=10)
factory.getRootObject().addCallback(got_root).addErrback(failed).addBoth(finish)
reactor.callLater(10, too_slow)
reactor.run()
print(json.dumps(seen, sort_keys=True))
'''


class Root(pb.Root):
    def remote_echo(self, value):
        return value


def _script(tmp_path):
    path = tmp_path / "capacity_client.py"
    path.write_text(CAPACITY_CLIENT)
    return path


def test_a_twisted_client_past_capacity_fails_at_once(serve_pbgreen, twisted_client, tmp_path,
                                                      caplog):
    server = serve_pbgreen(Root(), max_connections=1)
    host, port = "127.0.0.1", server.address[1]
    holder = pb.PBClient(host, port, timeout=10)
    try:
        assert holder.getRootObject().callRemote("echo", 1) == 1
        with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
            started = time.monotonic()
            seen = twisted_client("refused", host, port, script=_script(tmp_path)).result()
            elapsed = time.monotonic() - started
        print("what Twisted saw:", seen)  # shown with -s, for the report
        # The Deferred failed (never a hang), quickly, because the connection
        # was closed: Twisted sees it as a connection lost / refused.
        assert seen["outcome"] == "errback", seen
        assert seen["error"]["after"] < 1.0, seen
        assert seen["error"]["type"].startswith("twisted.internet.error."), seen
        assert seen["lost"] and seen["lost"][0]["after"] < 1.0, seen
        assert not seen["failed"], seen  # TCP itself connected: it is PB that refused
        # What Twisted logs: no dialect in common (the offer was "server at capacity").
        assert any("doesn't speak any of the protocols" in line for line in seen["log"]), seen
        assert not any("Traceback" in line or "Unhandled" in line for line in seen["log"]), seen
        assert elapsed < 10, elapsed
        # The server said so in its log, naming the peer.
        warnings = [r for r in caplog.records if r.name == "pbgreen.server"
                    and r.levelno == logging.WARNING and "capacity" in r.getMessage()]
        assert len(warnings) == 1 and host in warnings[0].getMessage()
        # The client being served did not notice.
        assert holder.getRootObject().callRemote("echo", 2) == 2
    finally:
        holder.close()


def test_a_twisted_client_is_served_once_a_slot_frees(serve_pbgreen, twisted_client, tmp_path,
                                                      wait_for):
    server = serve_pbgreen(Root(), max_connections=1)
    host, port = "127.0.0.1", server.address[1]
    holder = pb.PBClient(host, port, timeout=10)
    assert holder.getRootObject().callRemote("echo", 1) == 1
    holder.close()
    assert wait_for(lambda: not server.connections, deadline=5)
    seen = twisted_client("served", host, port, script=_script(tmp_path)).result()
    assert seen["outcome"] == "root" and seen["echo"] == "hello", seen
