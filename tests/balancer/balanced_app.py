"""The PB service the balancer tests put behind HAProxy (``pbgreen serve balanced_app:Service``).

Every connection gets its own ``Session`` (``rootObject``), which knows the
connection it serves, so ``remote_whoami`` can answer with this process's
pid and ``conn.peer``: the client's address as the PROXY header gave it.
The ``Tally`` is one per process: a Cacheable whose holders see every
``remote_bump``.
"""

import os

import pbgreen as pb


class Point(pb.Copyable, pb.RemoteCopy):
    """Sent by value; the client registers it too (``setUnjellyableForClass``)."""

    def __init__(self, x=0, y=0):
        self.x, self.y = x, y


pb.setUnjellyableForClass(Point, Point)


class Tally(pb.Cacheable):
    """A number every holder follows: ``observe_set`` after each change."""

    def __init__(self):
        self.value = 0
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)

    def bump(self):
        self.value += 1
        for observer in self.observers:
            observer.callRemote("set", self.value)
        return self.value


class TallyCopy(pb.RemoteCache):
    def observe_set(self, value):
        self.value = value


pb.setUnjellyableForClass(Tally, TallyCopy)


class Counter(pb.Referenceable):
    """Sent by reference: its state stays here."""

    def __init__(self):
        self.count = 0

    def remote_add(self, n):
        self.count += n
        return (os.getpid(), self.count)


class Session(pb.Referenceable):
    def __init__(self, connection, tally):
        self.connection = connection
        self.tally = tally

    def remote_whoami(self):
        return (os.getpid(), str(self.connection.peer))

    def remote_echo(self, value):
        return value

    def remote_counter(self):
        return Counter()

    def remote_point(self, x, y):
        return Point(x, y)

    def remote_tally(self):
        return self.tally

    def remote_bump(self):
        return self.tally.bump()


class Service(pb.Root):
    def __init__(self):
        self.tally = Tally()

    def rootObject(self, connection):
        return Session(connection, self.tally)
