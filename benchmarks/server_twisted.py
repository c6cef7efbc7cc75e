"""The Twisted PB server that load.py attacks: ``remote_echo`` and ``remote_blob``.

Usage: python server_twisted.py

A plain ``PBServerFactory`` on 127.0.0.1, port 0, with TCP_NODELAY on each
accepted connection (as pbgreen has); prints ``PORT <n>``. Exits when its
stdin closes (or on SIGTERM). Twisted's log goes to stderr.
"""

import sys
import threading

from twisted.internet import reactor
from twisted.python import log
from twisted.spread import pb

BLOB = bytes(range(256)) * 256  # 64 KiB, built once: the answer costs I/O, not building


class Root(pb.Root):
    def remote_echo(self, x):
        return x

    def remote_blob(self, size=len(BLOB)):
        return BLOB if size == len(BLOB) else BLOB[:size]


class NoDelayBroker(pb.Broker):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        super().connectionMade()


def stop_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    reactor.callFromThread(lambda: reactor.running and reactor.stop())


def main():
    log.startLogging(sys.stderr, setStdout=False)
    factory = pb.PBServerFactory(Root())
    factory.protocol = NoDelayBroker
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    reactor.run()  # its SIGTERM handler stops the reactor


if __name__ == "__main__":
    main()
