#!/usr/bin/env python3
"""Controlling the copied state, sending side: send a SenderPond.

Usage: copy2_sender.py [HOST [PORT]]    (default localhost 8800)

The pond's class lives in copy2_classes.py, so both processes know it by
the same name, copy2_classes.SenderPond, without any __main__ tricks.
"""
import sys

import pbgreen as pb
from copy2_classes import SenderPond


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    pond = SenderPond(3, 4)
    print("count %d" % pond.count())

    with pb.PBClient(host, port) as client:
        root = client.getRootObject()
        try:
            response = root.callRemote("takePond", pond)
        except pb.InsecureJelly:
            print("error during takePond:")
            print(" InsecureJelly")
            return 1
        except Exception as failure:
            print("error during takePond:")
            print("", repr(failure))
            return 1
    print("pond arrived", response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
