#!/usr/bin/env python3
"""References to client-side objects, server side: call back into the client.

Usage: pb3server.py [PORT]    (default 8800; 0 picks a free port)

remote_takeTwo calls the client's object while the client is still
waiting for takeTwo's own answer. Each incoming call runs in its own
greenlet, so neither side deadlocks, and the nested callRemote returns
the client's answer here.
"""
import sys

import pbgreen as pb


class One(pb.Root):
    def remote_takeTwo(self, two):
        print("received a Two called", two, flush=True)
        print("telling it to print(12)", flush=True)
        two.callRemote("print", 12)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    server = pb.PBServer(One(), port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
