#!/usr/bin/env python3
"""References come back, client side: get a Two and hand it back to One.

Usage: pb2client.py [HOST [PORT]]    (default localhost 8800)

Twisted's version keeps its state in a small class so that one callback
can reach the next; with blocking calls plain local variables do.
"""
import sys

import pbgreen as pb


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    with pb.PBClient(host, port) as client:
        one = client.getRootObject()
        print("got one object:", one)
        print("asking it to getTwo")
        two = one.callRemote("getTwo")
        print("got two object:", two)
        print("giving it back to one")
        print("one is", one)
        one.callRemote("checkTwo", two)
    return 0


if __name__ == "__main__":
    sys.exit(main())
