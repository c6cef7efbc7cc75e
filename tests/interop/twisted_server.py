"""A real Twisted PB server: the peer for pbgreen's client-side interop tests.

Usage: python twisted_server.py

Listens on 127.0.0.1, port 0, and prints ``PORT <n>`` as its first stdout
line. Exits when stdin is closed or on SIGTERM. Twisted's log goes to stderr.

Every connection gets its own root object (``PerConnectionRoot``), which
keeps the broker so ``tableSize``/``childRefcount`` can report the
reference bookkeeping of exactly that connection.
"""

import gc
import os
import sys
import weakref

from twisted.internet import defer, reactor
from twisted.python import log
from twisted.spread import pb
from zope.interface import implementer

from twisted_common import (
    Child,
    Counter,
    MyError,
    OtherError,
    Point,
    Secret,
    describe_point,
    stop_when_stdin_closes,
)


class ServerRoot(pb.Root):
    def __init__(self, broker):
        self.broker = broker
        self.child = Child()
        self.kept = []
        self.fresh = []
        self.hung = []
        self.waiting = []
        self.notes = []
        self.counter = Counter()

    # --- values ---------------------------------------------------------
    def remote_echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_add(self, a, b, c=0):
        return a + b + c

    def remote_returnIt(self, x):
        return x

    def remote_note(self, x):
        self.notes.append(x)
        return x

    def remote_notes(self):
        return self.notes

    def remote_raiseAndNote(self, x):
        self.notes.append(x)
        raise ValueError("noted %r" % (x,))

    # --- references -----------------------------------------------------
    def remote_getRef(self):
        return self.child

    def remote_isChild(self, x):
        return x is self.child

    def remote_getTwoRefs(self):
        return [self.child, self.child]

    def remote_tableSize(self):
        return len(self.broker.localObjects)

    def remote_childRefcount(self):
        luid = self.broker.luids.get(self.child.processUniqueID())
        if luid is None:
            return 0
        return self.broker.localObjects[luid].refcount

    def remote_makeFresh(self):
        child = Child()
        self.fresh.append(weakref.ref(child))
        return len(self.fresh) - 1, child

    def remote_makeFreshTwice(self):
        child = Child()
        self.fresh.append(weakref.ref(child))
        return len(self.fresh) - 1, [child, child]

    def remote_freshAlive(self, index):
        gc.collect()
        return self.fresh[index]() is not None

    def remote_callback(self, ref, value):
        return ref.callRemote("ping", value)

    def remote_keepAndReturn(self, x):
        self.kept.append(x)
        return x

    def remote_releaseKept(self):
        n = len(self.kept)
        del self.kept[:]
        return n

    # --- errors ---------------------------------------------------------
    def remote_raiseMyError(self):
        raise MyError("my message")

    def remote_raiseOtherError(self):
        raise OtherError("other message")

    def remote_raisePbError(self):
        raise pb.Error("base error")

    def remote_raisePlain(self):
        raise ValueError("plain failure")

    def remote_failLater(self):
        # The Deferred path: the CopyableFailure then carries the extra
        # 'pickled' and '_frames' keys.
        d = defer.Deferred()
        reactor.callLater(0, d.errback, KeyError("k"))
        return d

    # --- answers that come late or never --------------------------------
    def remote_hang(self):
        d = defer.Deferred()
        self.hung.append(d)
        return d

    def remote_hangers(self):
        return len(self.hung)

    def remote_releaseHung(self, value):
        hung, self.hung = self.hung, []
        for d in hung:
            d.callback(value)
        return len(hung)

    def remote_waitRelease(self, value):
        d = defer.Deferred()
        self.waiting.append((d, value))
        return d

    def remote_release(self, expected=None):
        # Fire the waiters in reverse order, so the answers arrive in an
        # order different from the order of the calls.
        waiting, self.waiting = self.waiting, []
        for d, value in reversed(waiting):
            d.callback(value)
        return len(waiting)

    def remote_pid(self):
        return os.getpid()

    # --- copies (interop_shapes.Point; pbgreen's ShapesRoot has the same) --
    def remote_describePoint(self, p):
        return describe_point(p)

    def remote_describeTwo(self, pair):
        first, second = pair
        return {"same": first is second, "first": describe_point(first)}

    def remote_getPoint(self, x, y):
        return Point(x, y)

    def remote_getTwoPoints(self):
        p = Point(1, 2)
        return [p, p]

    def remote_getSecret(self):
        return Secret()

    # --- caches (interop_shapes.Counter) --------------------------------
    def remote_getCounter(self):
        return self.counter

    def remote_getCounterTwice(self):
        return [self.counter, self.counter]

    def remote_isCounter(self, x):
        return x is self.counter

    def remote_setCounter(self, value):
        # Answers once every holder has answered its observe_setValue.
        return self.counter.setValue(value)

    def remote_setCounterNoWait(self, value):
        self.counter.setValue(value)
        return len(self.counter.observers)

    def remote_setAndCheck(self, value, checker):
        # The update is written before the call to the checker.
        self.counter.setValue(value)
        return checker.callRemote("check")

    def remote_pushHang(self):
        for observer in self.counter.observers:
            observer.callRemote("hang")
        return "returned"

    def remote_pushUnknown(self):
        # observe_nosuch does not exist on the holder: report each failure.
        calls = [
            o.callRemote("nosuch").addCallbacks(
                lambda r: ["ok", repr(r)],
                lambda f: ["err", f.check(AttributeError) is not None],
            )
            for o in self.counter.observers
        ]
        return defer.gatherResults(calls)

    def remote_counterStats(self):
        return self.counter.stats()


@implementer(pb.IPBRoot)
class PerConnectionRoot:
    def rootObject(self, broker):
        return ServerRoot(broker)


def main():
    log.startLogging(sys.stderr, setStdout=False)
    port = reactor.listenTCP(
        0, pb.PBServerFactory(PerConnectionRoot()), interface="127.0.0.1"
    )
    sys.stdout.write("PORT %d\n" % port.getHost().port)
    sys.stdout.flush()
    stop_when_stdin_closes()
    reactor.run()  # installs the SIGTERM handler that stops the reactor


if __name__ == "__main__":
    main()
