#!/usr/bin/env python3
"""References come back, server side: a reference we gave out returns as
the very object we gave.

Usage: pb2server.py [PORT]    (default 8800; 0 picks a free port)
"""
import sys

import pbgreen as pb


class Two(pb.Referenceable):
    def remote_print(self, arg):
        print("two.print was given", arg, flush=True)


class One(pb.Root):
    def __init__(self, two):
        self.two = two

    def remote_getTwo(self):
        print("One.getTwo(), returning my two called", self.two, flush=True)
        return self.two

    def remote_checkTwo(self, newtwo):
        print("One.checkTwo(): comparing my two", self.two, flush=True)
        print("One.checkTwo(): against your two", newtwo, flush=True)
        # Not a RemoteReference: the broker maps the returning reference
        # back to the local object it stands for.
        if newtwo is self.two:
            print("One.checkTwo(): our twos are the same", flush=True)
        else:
            print("One.checkTwo(): our twos differ", flush=True)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    server = pb.PBServer(One(Two()), port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
