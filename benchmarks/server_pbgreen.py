"""The pbgreen server that load.py attacks: ``remote_echo`` and ``remote_blob``.

``remote_pid`` tells scale.py (which serves ``Root`` with ``pbgreen serve``)
which process a connection reached.

Usage: python server_pbgreen.py

Listens on 127.0.0.1, port 0, with PBServer's default settings, and prints
``PORT <n>``. Exits when its stdin closes (or on SIGTERM). Uses only
pbgreen's public API.
"""

import os
import sys

import gevent

import pbgreen as pb

BLOB = bytes(range(256)) * 256  # 64 KiB, built once: the answer costs I/O, not building


class Root(pb.Root):
    def remote_echo(self, x):
        return x

    def remote_blob(self, size=len(BLOB)):
        return BLOB if size == len(BLOB) else BLOB[:size]

    def remote_pid(self):
        return os.getpid()


def main():
    server = pb.PBServer(Root(), port=0, host="127.0.0.1")
    server.start()
    print("PORT", server.address[1], flush=True)
    gevent.get_hub().threadpool.spawn(sys.stdin.buffer.read).get()  # EOF, hub keeps running
    server.stop()


if __name__ == "__main__":
    main()
