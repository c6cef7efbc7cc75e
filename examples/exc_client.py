#!/usr/bin/env python3
"""Raising remote exceptions, client side: look at what a remote error carries.

Usage: exc_client.py [HOST [PORT [METHOD]]]
       (default localhost 8800 broken; use broken2 to see the server log
       an unexpected exception)

The remote error is raised right out of callRemote. Every such exception
is a pb.CopiedFailure and keeps Failure's accessors: .type names the remote
class, .getErrorMessage() gives its message. This script does not define
MyError, so it can only catch the error as a pb.CopiedFailure.
"""
import sys

import pbgreen as pb


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    method = sys.argv[3] if len(sys.argv) > 3 else "broken"
    with pb.PBClient(host, port) as client:
        obj = client.getRootObject()
        try:
            obj.callRemote(method)
        except pb.CopiedFailure as reason:
            cls = type(reason)
            print("got remote Exception")
            print(" .__class__ =", f"{cls.__module__}.{cls.__qualname__}")
            print(" .getErrorMessage() =", reason.getErrorMessage())
            print(" .type =", reason.type)
        else:
            print("erm, it wasn't *supposed* to work..")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
