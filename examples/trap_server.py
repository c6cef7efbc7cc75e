#!/usr/bin/env python3
"""Catching remote errors, server side: a method that can panic, and one
that shuts the server down.

Usage: trap_server.py [PORT]    (default 8800; 0 picks a free port)

MyException is defined in __main__ here and in trap_client.py, so both
sides call it "__main__.MyException" and the client's `except MyException`
catches the copy.
"""
import sys

import gevent

import pbgreen as pb


class MyException(pb.Error):
    """Raised when the caller panics."""


class One(pb.Root):
    def __init__(self):
        self.server = None

    def remote_fooMethod(self, arg):
        if arg == "panic!":
            raise MyException()
        return "response"

    def remote_shutdown(self):
        # Stop from a fresh greenlet: this call still has its answer to send,
        # and stop() closes every connection, this one included.
        gevent.spawn(self.server.stop)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    root = One()
    server = pb.PBServer(root, port=port, host="127.0.0.1")
    root.server = server
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
