#!/usr/bin/env python3
"""Passing objects by value, sending side: hand the receiver a whole pond.

Usage: copy_sender.py [HOST [PORT]]    (default localhost 8800)

CopyPond is a pb.Copyable, so callRemote sends its state (by default its
__dict__) under the class name "copy_sender.CopyPond"; copy_receiver.py has
registered that name, so the receiver accepts it and builds its own
ReceiverPond from the state. Had it not, callRemote would raise
InsecureJelly here instead of returning.
"""
import sys

import pbgreen as pb


class LilyPond:
    def setStuff(self, color, numFrogs):
        self.color = color
        self.numFrogs = numFrogs

    def countFrogs(self):
        print("%d frogs" % self.numFrogs, flush=True)


class CopyPond(LilyPond, pb.Copyable):
    pass


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    # Run as a script, this file is __main__; take the class from the module
    # proper so the wire name is copy_sender.CopyPond, the name the
    # receiver registered.
    from copy_sender import CopyPond
    pond = CopyPond()
    pond.setStuff("green", 7)
    pond.countFrogs()
    print(".".join([type(pond).__module__, type(pond).__name__]))

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
