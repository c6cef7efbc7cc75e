#!/usr/bin/env python3
"""Catching remote errors, client side: Twisted's `worksLike` made real.

Usage: trap_client.py [HOST [PORT]]    (default localhost 8800)

Twisted's PB documentation explains its chain of errbacks and
Failure.trap() calls by comparing it to a synchronous try/except that
could not actually be written. With pbgreen, callRemote raises, so that
try/except is simply the code:

- DeadReferenceError: the connection is already gone; raised at the call.
- InsecureJelly: the argument cannot be sent (raised before anything goes
  out), or the other side refused what we sent.
- MyException / MyOtherException: the remote method raised a pb.Error
  subclass that this process also defines under the same name.
"""
import sys

import gevent.event

import pbgreen as pb


class MyException(pb.Error):
    """The server's fooMethod raises this when told to panic."""


class MyOtherException(pb.Error):
    """Never raised by this server; shows catching several types at once."""


class ScaryObject:
    """A class nobody registered: not safe to serialize."""


class Caller:
    def __init__(self, remote):
        self.remote = remote
        self.disconnected = gevent.event.Event()
        remote.notifyOnDisconnect(lambda ref: self.disconnected.set())

    def doCall(self, explanation, arg):
        print(explanation)
        try:
            response = self.remote.callRemote("fooMethod", arg)
        except pb.DeadReferenceError:
            print("  stale reference: the client disconnected or crashed")
        except pb.InsecureJelly:
            print("  InsecureJelly: you tried to send something unsafe to them")
        except (MyException, MyOtherException) as failure:
            # trap() answers which of the listed types matched, as
            # Failure.trap does.
            which = failure.trap(MyException, MyOtherException)
            print(f"  remote raised a {which.__name__}")
        except Exception as failure:
            print("  something else happened:", repr(failure))
        else:
            print("  method successful, response:", response)

    def callOne(self):
        self.doCall("callOne: call with safe object", "safe string")

    def callTwo(self):
        self.doCall("callTwo: call with dangerous object", ScaryObject())

    def callThree(self):
        self.doCall("callThree: call that raises remote exception", "panic!")

    def callShutdown(self):
        print("telling them to shut down")
        try:
            self.remote.callRemote("shutdown")
        except pb.PBConnectionLost:
            pass  # the server may hang up before its answer gets out
        # Twisted's version waits a second here; we wait for the disconnect.
        if not self.disconnected.wait(timeout=10):
            print("  the server did not hang up")

    def callFour(self):
        self.doCall("callFour: call on stale reference", "dummy")


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    with pb.PBClient(host, port) as client:
        caller = Caller(client.getRootObject())
        caller.callOne()
        caller.callTwo()
        caller.callThree()
        caller.callShutdown()
        caller.callFour()
    return 0


if __name__ == "__main__":
    sys.exit(main())
