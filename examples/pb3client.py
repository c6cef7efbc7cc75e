#!/usr/bin/env python3
"""References to client-side objects, client side: give the server our Two.

Usage: pb3client.py [HOST [PORT]]    (default localhost 8800)

While this script is blocked in callRemote("takeTwo", ...), the server
calls two.print(12); the client's connection keeps serving incoming calls
in the meantime, so Two.remote_print runs before takeTwo returns.
"""
import sys

import pbgreen as pb


class Two(pb.Referenceable):
    def remote_print(self, arg):
        print("Two.print() called with", arg, flush=True)


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    two = Two()
    with pb.PBClient(host, port) as client:
        one = client.getRootObject()
        print("got One:", one)
        print("giving it our two")
        one.callRemote("takeTwo", two)
    return 0


if __name__ == "__main__":
    sys.exit(main())
