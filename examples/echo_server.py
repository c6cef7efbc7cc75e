#!/usr/bin/env python3
"""PB's basic example, server side: a root object with one remote method.

Usage: echo_server.py [PORT]    (default 8789; 0 picks a free port)
"""
import sys

import pbgreen as pb


class Echoer(pb.Root):
    def remote_echo(self, st):
        print("echoing:", st, flush=True)
        return st


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8789
    server = pb.PBServer(Echoer(), port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
