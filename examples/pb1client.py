#!/usr/bin/env python3
"""Passing more references, client side: call a method on a returned object.

Usage: pb1client.py [HOST [PORT]]    (default localhost 8800)

getTwo answers with a Referenceable, which arrives here as a
RemoteReference of its own; its remote_ methods are called the same way.
"""
import sys

import pbgreen as pb


def got_obj1(obj1):
    print("got first object:", obj1)
    print("asking it to getTwo")
    obj2 = obj1.callRemote("getTwo")
    print("got second object:", obj2)
    print("telling it to do three(12)")
    obj2.callRemote("three", 12)


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    try:
        client = pb.PBClient(host, port)
    except OSError as reason:
        print("error getting first object", reason)
        return 1
    with client:
        got_obj1(client.getRootObject())
    return 0


if __name__ == "__main__":
    sys.exit(main())
