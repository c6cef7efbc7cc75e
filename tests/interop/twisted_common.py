"""Pieces shared by the two Twisted peer scripts (never imported by pytest).

The error classes live in a module named ``interop_errors`` so their fully
qualified names (``interop_errors.MyError``) match the pbgreen-side classes
that the tests define under the same name; pbgreen maps remote errors by
qualified name, and Twisted's ``Failure.check`` compares qualified names too.
"""

import sys
import types

from twisted.internet import defer
from twisted.spread import pb

interop_errors = types.ModuleType("interop_errors")


class MyError(pb.Error):
    """A pb.Error subclass that the pbgreen side also defines."""


class OtherError(pb.Error):
    """A pb.Error subclass that the pbgreen side does not define."""


for _cls in (MyError, OtherError):
    _cls.__module__ = "interop_errors"
    _cls.__qualname__ = _cls.__name__
    setattr(interop_errors, _cls.__name__, _cls)
sys.modules["interop_errors"] = interop_errors


class Child(pb.Referenceable):
    def remote_hello(self, name):
        return "hello " + name


# --- the Twisted side of the shared shapes module ------------------------------
# Copyable and Cacheable classes live in a module named ``interop_shapes`` so
# their qualified names (``interop_shapes.Point`` ...) match the pbgreen-side
# classes the tests define under the same names. Every name is registered by
# string, as a peer that cannot import the other side's classes would do.

interop_shapes = types.ModuleType("interop_shapes")


class Point(pb.Copyable, pb.RemoteCopy):
    """Sent and received as ``interop_shapes.Point``; ``_private`` stays home."""

    def __init__(self, x=0, y=0):
        self.x = x
        self.y = y
        self._private = "never sent"

    def getStateToCopy(self):
        return {"x": self.x, "y": self.y}


class Secret(pb.Copyable):
    """A Copyable that no peer registers."""

    def __init__(self):
        self.code = 42


class Counter(pb.Cacheable):
    """Cached by the peer as ``interop_shapes.Counter``; one per connection."""

    def __init__(self, value=3):
        self.value = value
        self.observers = []
        self.seen = []  # (perspective, observer) per getStateToCacheAndObserveFor
        self.stopped = []  # (perspective, observer) per stoppedObserving

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        self.seen.append((perspective, observer))
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.stopped.append((perspective, observer))
        self.observers.remove(observer)  # RemoteCacheObservers compare equal

    def setValue(self, value):
        """Push to every observer; fires with their number once all answered."""
        self.value = value
        calls = [o.callRemote("setValue", value) for o in self.observers]
        return defer.gatherResults(calls).addCallback(lambda _: len(calls))

    def stats(self):
        return {
            "value": self.value,
            "observers": len(self.observers),
            "stopped": len(self.stopped),
            # stoppedObserving got what getStateToCacheAndObserveFor got
            "stops_match": [stop in self.seen for stop in self.stopped],
        }


class RemoteCounter(pb.RemoteCache):
    """The holder's side of ``interop_shapes.Counter``."""

    def setCopyableState(self, state):
        self.value = state["value"]
        self.initial_state = dict(state)
        self.updates = []
        self.hung = []

    def observe_setValue(self, value):
        self.value = value
        self.updates.append(value)

    def observe_hang(self):
        d = defer.Deferred()
        self.hung.append(d)
        return d


class Checker(pb.Referenceable):
    """Reports what a cache holds when the owner calls it."""

    def __init__(self, cache):
        self.cache = cache

    def remote_check(self):
        return self.cache.value


for _cls in (Point, Secret, Counter):
    _cls.__module__ = "interop_shapes"
    _cls.__qualname__ = _cls.__name__
    setattr(interop_shapes, _cls.__name__, _cls)
sys.modules["interop_shapes"] = interop_shapes

pb.setUnjellyableForClass("interop_shapes.Point", Point)
pb.setUnjellyableForClass("interop_shapes.Counter", RemoteCounter)


def describe_point(p):
    """What arrived as an ``interop_shapes.Point``, as JSON-able facts."""
    return {
        "class": type(p).__name__,
        "remote_copy": isinstance(p, pb.RemoteCopy),
        "x": getattr(p, "x", None),
        "y": getattr(p, "y", None),
        "private_sent": "_private" in vars(p),
    }


def run_scenario(factory, deferred, scenario, deadline):
    """Run the reactor until ``deferred`` (a scenario) fires; print its JSON result.

    Returns the exit status: 0 when the scenario produced a result, 1 when it
    failed or did not finish within ``deadline`` seconds.
    """
    import json
    import traceback

    from twisted.internet import reactor

    status = {"code": 1}

    def done(result):
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        sys.stdout.flush()
        status["code"] = 0

    def failed(f):
        sys.stderr.write("scenario %r failed:\n%s\n" % (scenario, f.getTraceback()))

    deferred.addCallbacks(done, failed)

    def finish(_):
        factory.disconnect()
        reactor.callLater(0, reactor.stop)

    deferred.addBoth(finish)

    def too_slow():
        sys.stderr.write("scenario %r: no result after %ss\n" % (scenario, deadline))
        reactor.stop()

    timer = reactor.callLater(deadline, too_slow)
    try:
        reactor.run()
    except Exception:
        traceback.print_exc()
        return 1
    if timer.active():
        timer.cancel()
    return status["code"]


def stop_when_stdin_closes():
    """Stop the reactor once stdin reaches EOF (the test's life line to a server script).

    Reads stdin in a daemon thread, so call it once before ``reactor.run()``.
    """
    import threading

    from twisted.internet import reactor

    def wait_for_eof():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        reactor.callFromThread(lambda: reactor.running and reactor.stop())

    threading.Thread(target=wait_for_eof, daemon=True).start()


def serve_until_stdin_closes(factory):
    """Listen with ``factory`` on 127.0.0.1, port 0; print ``PORT <n>``; run the
    reactor until stdin closes (the test's life line) or SIGTERM."""
    from twisted.internet import reactor
    from twisted.python import log

    log.startLogging(sys.stderr, setStdout=False)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    sys.stdout.write("PORT %d\n" % port.getHost().port)
    sys.stdout.flush()
    stop_when_stdin_closes()
    reactor.run()
