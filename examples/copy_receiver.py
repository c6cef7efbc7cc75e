#!/usr/bin/env python3
"""Passing objects by value, receiving side: accept copy_sender's ponds.

Usage: copy_receiver.py [PORT]    (default 8800; 0 picks a free port)

Only classes registered with setUnjellyableForClass may come in. Here the
sender's copy_sender.CopyPond is let in and rebuilt as a ReceiverPond, a
pb.RemoteCopy that also shares LilyPond's behaviour: it is created without
calling __init__ and gets the sender's state through setCopyableState.
"""
import sys

import gevent

import pbgreen as pb
from copy_sender import CopyPond, LilyPond


class ReceiverPond(pb.RemoteCopy, LilyPond):
    pass


pb.setUnjellyableForClass(CopyPond, ReceiverPond)


class Receiver(pb.Root):
    def __init__(self):
        self.server = None

    def remote_takePond(self, pond):
        print(" got pond:", pond, flush=True)
        pond.countFrogs()
        return "safe and sound"  # the sender prints this as its acknowledgement

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
