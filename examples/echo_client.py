#!/usr/bin/env python3
"""PB's basic example, client side: fetch the root object, call echo on it.

Usage: echo_client.py [HOST [PORT]]    (default localhost 8789)

Twisted needs a Deferred chain and a running reactor for this; here the
calls simply return their answers, and a failure is an ordinary exception.
"""
import sys

import pbgreen as pb


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8789
    try:
        with pb.PBClient(host, port) as client:
            root = client.getRootObject()
            echo = root.callRemote("echo", "hello network")
    except Exception as reason:
        print("error: " + str(reason))
        return 1
    print("server echoed: " + echo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
