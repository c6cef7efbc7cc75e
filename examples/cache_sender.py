#!/usr/bin/env python3
"""Cacheable, sending side: change a pond the receiver keeps a copy of.

Usage: cache_sender.py [HOST [PORT]]    (default localhost 8800)

Twisted's version spreads this over six callbacks and a one-second pause
so the updates have time to arrive. Here it is one straight sequence:
addDuck/removeDuck queue their updates to the receiver, and those updates
are written before the checkDucks call that follows them, so the receiver
always counts the pond after it has changed.

When the receiver drops its copy, the master's stoppedObserving runs in
this process; the script waits for that (with a deadline) before telling
the receiver to shut down.
"""
import sys

import pbgreen as pb
from cache_classes import MasterDuckPond

STOPPED_OBSERVING_TIMEOUT = 10.0


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    master = MasterDuckPond(["one duck", "two duck"])
    master.count()

    with pb.PBClient(host, port) as client:
        remote = client.getRootObject()
        remote.callRemote("takePond", master)
        master.addDuck("ugly duckling")
        master.count()
        remote.callRemote("checkDucks")
        master.removeDuck("one duck")
        master.count()
        remote.callRemote("checkDucks")
        remote.callRemote("ignorePond")
        if master.unobserved.wait(timeout=STOPPED_OBSERVING_TIMEOUT):
            print("stoppedObserving ran: nobody watches the pond now")
            status = 0
        else:
            print("stoppedObserving did not run within %gs" % STOPPED_OBSERVING_TIMEOUT)
            status = 1
        try:
            remote.callRemote("shutdown")
        except pb.PBConnectionLost:
            pass  # the receiver may hang up before its answer gets out
    return status


if __name__ == "__main__":
    sys.exit(main())
