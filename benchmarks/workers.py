"""Calls per second from ``pbgreen serve --workers 1`` vs ``--workers N`` (default 2).

Usage: python benchmarks/workers.py [--workers 2] [--clients 4] [--connections 8]
                                    [--seconds 5]

For each worker count, starts ``pbgreen serve server_pbgreen:Root --port 0
--workers W`` (the root ``load.py`` uses), then ``--clients`` client
processes (this file again, ``--role client``), each with ``--connections``
connections and one greenlet per connection calling ``echo(1)`` in a loop
for ``--seconds``. Prints the calls per second of each run, how many calls
each worker process answered (matching the clients' local ports to the
workers' sockets in ``/proc``), and
the ratio N/1. The clients share the machine with the server, so on a
machine with few cores the ratio is bounded by the cores left for the
server: read it next to ``os.cpu_count()``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def client(port: int, connections: int, seconds: float) -> None:
    import gevent

    import pbgreen as pb

    counts: collections.Counter[int] = collections.Counter()
    clients = [pb.PBClient("127.0.0.1", port, timeout=30) for _ in range(connections)]
    print("CONNECTED", flush=True)
    deadline = time.monotonic() + seconds

    def run(index: int, root) -> None:
        done = 0
        while time.monotonic() < deadline:
            root.callRemote("echo", 1)
            done += 1
        counts[index] = done

    gevent.joinall([gevent.spawn(run, i, c.getRootObject()) for i, c in enumerate(clients)])
    local_ports = [c.connection.sock.getsockname()[1] for c in clients]
    for c in clients:
        c.close()
    print(json.dumps({"calls": [counts[i] for i in range(connections)], "ports": local_ports}),
          flush=True)


def owners(server_pid: int) -> dict[int, int]:
    """local port of each established connection to a worker -> that worker's pid (/proc)."""
    from pbgreen.testing.processes import children

    result = {}
    for pid in children(server_pid):
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/tcp") as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                    result[int(fields[2].split(":")[1], 16)] = pid
    return result


def measure(workers: int, args: argparse.Namespace) -> tuple[float, dict[int, int]]:
    from pbgreen.testing.processes import Child, start

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]))
    with start([sys.executable, "-m", "pbgreen", "serve", "server_pbgreen:Root", "--port", "0",
                "--workers", str(workers), "--log-level", "WARNING"],
               ready=r"on 127\.0\.0\.1:(\d+)", cwd=HERE, env=env, timeout=60) as server:
        clients = [Child([sys.executable, __file__, "--role", "client", "--port", str(server.port),
                          "--connections", str(args.connections), "--seconds",
                          str(args.seconds)], env=env) for _ in range(args.clients)]
        for c in clients:  # all connected: note which worker holds which connection
            c.expect("^CONNECTED$", timeout=60)
        where = owners(server.pid)
        total = 0
        per_worker: collections.Counter[int] = collections.Counter()
        for c in clients:
            line = c.read_line(timeout=args.seconds + 60)
            c.stop()
            report = json.loads(line)
            total += sum(report["calls"])
            for calls, port in zip(report["calls"], report["ports"]):
                per_worker[where.get(port, 0)] += calls
        server.stop(timeout=20)
    return total / args.seconds, dict(per_worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="orchestrator", choices=["orchestrator", "client"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.role == "client":
        client(args.port, args.connections, args.seconds)
        return
    print(f"cores: {os.cpu_count()}; {args.clients} client processes x {args.connections} "
          f"connections, {args.seconds:g} s each run")
    one, _ = measure(1, args)
    print(f"--workers 1: {one:,.0f} calls/s")
    many, split = measure(args.workers, args)
    shares = ", ".join(f"{calls / args.seconds:,.0f}" for calls in sorted(split.values()))
    print(f"--workers {args.workers}: {many:,.0f} calls/s (per worker: {shares})")
    print(f"ratio: {many / one:.2f}x")


if __name__ == "__main__":
    main()
