#!/usr/bin/env python3
"""Cacheable, receiving side: keep a live copy of the sender's pond.

Usage: cache_receiver.py [PORT]    (default 8800; 0 picks a free port)

takePond receives a SlaveDuckPond (registered in cache_classes.py) that the
sender keeps up to date through its observe_* methods. ignorePond drops the
only reference to it; when the copy is gone, the sender is told and its
stoppedObserving runs. shutdown stops the server, and the script exits.

The updates (observe_* calls) arrive while this script waits in
serve_forever(), which waits cooperatively, as gevent.sleep(seconds) does;
a script that waited in time.sleep() would receive nothing until it
returned (see docs/service.md, "Waiting in plain scripts").
"""
import sys

import gevent

import cache_classes  # noqa: F401  (registers SlaveDuckPond for MasterDuckPond)
import pbgreen as pb


class Receiver(pb.Root):
    def __init__(self):
        self.server = None
        self.pond = None

    def remote_takePond(self, pond):
        self.pond = pond
        print("got pond:", pond, flush=True)
        self.remote_checkDucks()

    def remote_checkDucks(self):
        print("[%d] ducks: " % self.pond.count(), self.pond.getDucks(), flush=True)

    def remote_ignorePond(self):
        print("dropping pond", flush=True)
        # The last reference goes; the sender hears of it and stops observing.
        self.pond = None

    def remote_shutdown(self):
        # From a fresh greenlet, so this call can still send its answer.
        gevent.spawn(self.server.stop)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    root = Receiver()
    server = pb.PBServer(root, port=port, host="127.0.0.1")
    root.server = server
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
