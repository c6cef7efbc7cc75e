"""Classes shared by cache_sender.py and cache_receiver.py.

MasterDuckPond is the original, a pb.Cacheable: the first time it is sent
over a connection, getStateToCacheAndObserveFor hands over its ducks and
receives an observer for that peer; afterwards every setter tells each
observer what changed. observer.callRemote returns at once: pbgreen queues
the update and delivers it, in order, before anything sent later on the
same connection. SlaveDuckPond is the receiver's copy, a pb.RemoteCache
whose observe_* methods apply those updates.
"""
import gevent.event

import pbgreen as pb


class MasterDuckPond(pb.Cacheable):
    def __init__(self, ducks):
        self.observers = []
        self.ducks = ducks
        self.unobserved = gevent.event.Event()  # set when the last observer goes

    def count(self):
        print("I have [%d] ducks" % len(self.ducks), flush=True)

    def addDuck(self, duck):
        self.ducks.append(duck)
        for o in self.observers:
            o.callRemote("addDuck", duck)

    def removeDuck(self, duck):
        self.ducks.remove(duck)
        for o in self.observers:
            o.callRemote("removeDuck", duck)

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        self.unobserved.clear()
        # Only the ducks travel; the observers and the event stay here.
        return self.ducks

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        if not self.observers:
            self.unobserved.set()


class SlaveDuckPond(pb.RemoteCache):
    def count(self):
        return len(self.cacheducks)

    def getDucks(self):
        return self.cacheducks

    def setCopyableState(self, state):
        print(" cache - sitting, er, setting ducks", flush=True)
        self.cacheducks = state

    def observe_addDuck(self, newDuck):
        print(" cache - addDuck", flush=True)
        self.cacheducks.append(newDuck)

    def observe_removeDuck(self, deadDuck):
        print(" cache - removeDuck", flush=True)
        self.cacheducks.remove(deadDuck)


pb.setUnjellyableForClass(MasterDuckPond, SlaveDuckPond)
