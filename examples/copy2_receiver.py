#!/usr/bin/env python3
"""Controlling the copied state, receiving side: count a pond we never built.

Usage: copy2_receiver.py [PORT]    (default 8800; 0 picks a free port)

This script never names a pond class: importing copy2_classes registers
SenderPond -> ReceiverPond, and that is all the security layer needs.
"""
import sys

import gevent

import copy2_classes  # noqa: F401  (registers ReceiverPond for SenderPond)
import pbgreen as pb


class Receiver(pb.Root):
    def __init__(self):
        self.server = None

    def remote_takePond(self, pond):
        print(" got pond:", pond, flush=True)
        print(" count %d" % pond.count(), flush=True)
        return "safe and sound"

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
