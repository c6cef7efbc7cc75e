"""A real Twisted PB client that stays idle: the peer for keepalive interop tests.

Usage: python twisted_idle_client.py IDLE_SECONDS HOST PORT

(The argument order of twisted_client.py, so the ``twisted_client`` fixture
runs it: the "scenario" is the idle time.)

Twisted's log goes to stderr (so the test can look for "Unhandled Error").
Connects with ``pb.PBClientFactory``, calls ``add(1, 2)`` on the root, sends
nothing for IDLE_SECONDS while recording every PB expression the server sends
meanwhile, calls ``add(3, 4)``, and prints one JSON line on stdout:

    {"first": 3, "second": 7, "lost": [], "idle_commands": ["message", ...]}

``lost`` lists the reasons of connection losses seen before the end of the
scenario (there should be none). Exits 0 on success, 1 on any failure or if
the scenario has not finished within DEADLINE seconds.
"""

import sys

from twisted.internet import defer, reactor, task
from twisted.python import log
from twisted.spread import pb

from twisted_common import run_scenario

DEADLINE = 20.0


class Factory(pb.PBClientFactory):
    def __init__(self):
        super().__init__()
        self.lost = []

    def clientConnectionLost(self, connector, reason, reconnecting=0):
        self.lost.append(reason.getErrorMessage())  # read into the result before the end
        return super().clientConnectionLost(connector, reason, reconnecting)


def _command(expression):
    if isinstance(expression, list) and expression:
        head = expression[0]
        return head.decode("ascii", "replace") if isinstance(head, bytes) else repr(head)
    return repr(expression)


@defer.inlineCallbacks
def scenario(factory, idle):
    root = yield factory.getRootObject()
    first = yield root.callRemote("add", 1, 2)
    broker = factory._broker
    seen = []
    received = broker.expressionReceived

    def spy(expression):
        seen.append(_command(expression))
        return received(expression)

    broker.expressionReceived = spy
    yield task.deferLater(reactor, idle, lambda: None)
    broker.expressionReceived = received
    idle_commands = list(seen)
    second = yield root.callRemote("add", 3, 4)
    return {
        "first": first,
        "second": second,
        "lost": list(factory.lost),
        "idle_commands": idle_commands,
        "connected": not broker.disconnected,
    }


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: twisted_idle_client.py IDLE_SECONDS HOST PORT\n")
        return 2
    idle, host, port = float(argv[1]), argv[2], int(argv[3])
    log.startLogging(sys.stderr, setStdout=False)
    factory = Factory()
    reactor.connectTCP(host, port, factory, timeout=10)
    return run_scenario(factory, scenario(factory, idle), "idle", DEADLINE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
