#!/usr/bin/env python3
"""Passing more references, server side: the root hands out a second object.

Usage: pb1server.py [PORT]    (default 8800; 0 picks a free port)
"""
import sys

import pbgreen as pb


class Two(pb.Referenceable):
    def remote_three(self, arg):
        print("Two.three was given", arg, flush=True)


class One(pb.Root):
    def remote_getTwo(self):
        two = Two()
        print("returning a Two called", two, flush=True)
        return two


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    server = pb.PBServer(One(), port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
