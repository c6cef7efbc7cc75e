"""Server memory per idle connection: pbgreen's PBServer next to Twisted PB.

Usage: python benchmarks/idle_memory.py [--counts 2000 10000] [--systems pbgreen twisted]

For each system and count, a fresh server process starts
(``server_pbgreen.py`` / ``server_twisted.py``: default settings, keepalive
on), and this process opens ``count`` TCP connections to it, each of which
completes the PB handshake (the server's dialect offer, our choice, both
``version`` messages) and then stays idle. The figure is the growth of the
server's resident memory (``VmRSS``) from its first connection to the last,
divided by the connections added: what one more idle, logged-in-ready
connection costs the server, interpreter and allocator overhead included.

The clients are plain blocking sockets speaking the handshake bytes (a few
hundred bytes of client memory each), so 10,000 of them fit in one process;
the open-file limit is raised to its hard limit (it must allow ``count``
sockets here and in the server).

``measure(system, count)`` returns bytes per connection; ``main()`` prints a
table.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pbgreen.banana import Decoder, encode  # noqa: E402
from pbgreen.testing.processes import Child  # noqa: E402

SERVERS = {"pbgreen": HERE / "server_pbgreen.py", "twisted": HERE / "server_twisted.py"}
SETTLE = 5.0  # seconds for the last handshakes, and for pbgreen to park idle connections (2 s)
DIALECT = b"pb"  # both servers offer it


def server_rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def handshake(port: int) -> socket.socket:
    """A connection to ``port`` that completed the PB handshake (and sends nothing more)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    decoder = Decoder()
    offer = []
    while not offer:  # the acceptor speaks first: its list of dialects
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("the server closed the connection before offering dialects")
        offer = decoder.feed(data, limit=1)
    if DIALECT not in offer[0]:
        raise ConnectionError(f"the server offers {offer[0]!r}, not {DIALECT!r}")
    sock.sendall(encode(DIALECT, vocab=False) + encode([b"version", 6], vocab=False))
    # Anything after the offer is its own ``version`` message: it switched.
    if not sock.recv(4096):
        raise ConnectionError("the server closed the connection during the handshake")
    return sock


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise RuntimeError(f"{needed} sockets need `ulimit -n` of at least {needed} "
                           f"(the hard limit is {hard})")


def measure(system: str, count: int) -> float:
    """Server RSS growth per idle, handshaken connection of ``system``, in bytes."""
    _raise_fd_limit(count + 100)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p))
    sockets: list[socket.socket] = []
    with Child([sys.executable, str(SERVERS[system])], env=env, label=f"{system} server",
               grace=5.0) as server:
        server.wait_ready(timeout=60)
        try:
            sockets.append(handshake(server.port))
            time.sleep(SETTLE)
            before = server_rss(server.proc.pid)
            for _ in range(count - 1):
                sockets.append(handshake(server.port))
            time.sleep(SETTLE)
            after = server_rss(server.proc.pid)
        finally:
            for sock in sockets:
                sock.close()
    return (after - before) / (count - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10_000])
    parser.add_argument("--systems", nargs="+", choices=sorted(SERVERS),
                        default=["pbgreen", "twisted"])
    args = parser.parse_args()
    print(f"{'system':<10}" + "".join(f"{n:>14,}" for n in args.counts)
          + "   (server RSS per idle connection, KB)")
    for system in args.systems:
        row = [measure(system, n) for n in args.counts]
        print(f"{system:<10}" + "".join(f"{b / 1024:>14.1f}" for b in row), flush=True)


if __name__ == "__main__":
    main()
