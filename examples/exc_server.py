#!/usr/bin/env python3
"""Raising remote exceptions, server side: one expected, one unexpected.

Usage: exc_server.py [PORT]    (default 8800; 0 picks a free port)

Both errors travel back to the caller. MyError derives from pb.Error, which
marks it as expected: nothing is logged here. MyError2 is a plain Exception,
so pbgreen also logs it, with its traceback and the words "Peer Will Receive
PB Traceback", on the `pbgreen` logger; logging.basicConfig sends that to
stderr. Neither error closes the connection.
"""
import logging
import sys

import pbgreen as pb


class MyError(pb.Error):
    """An expected exception: the caller is meant to handle it."""


class MyError2(Exception):
    """An unexpected exception: a bug worth a traceback on the server."""


class One(pb.Root):
    def remote_broken(self):
        msg = "fall down go boom"
        print(f"raising a MyError exception with data '{msg}'", flush=True)
        raise MyError(msg)

    def remote_broken2(self):
        msg = "hadda owie"
        print(f"raising a MyError2 exception with data '{msg}'", flush=True)
        raise MyError2(msg)


def main():
    logging.basicConfig()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    server = pb.PBServer(One(), port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
