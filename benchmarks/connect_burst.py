"""A burst of connects: does every client get the PB greeting? pbgreen vs Twisted PB.

N connects (default 1,000) leave at once from K client processes (default
4) for a PB server process: ``server_pbgreen.py`` (``PBServer`` with its
defaults: backlog 1024, max_connections 10,000) and ``server_twisted.py``
(``PBServerFactory`` on ``reactor.listenTCP``, whose backlog is 50). A PB
server speaks first: right after accepting it sends its dialect offer (the
"greeting", WIRE.md section 2.5). A client whose connection the server never
accepted, or accepted and never greeted, waits for it forever; that is what
this counts.

Reported per system, over all clients, with a deadline (default 30 s) from
the moment the burst left:

* greeted: got a complete dialect offer (a banana list naming ``pb``);
* refused (ECONNREFUSED), reset (ECONNRESET, or closed before greeting),
  other errors;
* never connected / connected but never greeted by the deadline;
* time until the last greeting, and the median and 99th percentile of the
  time from the burst to each greeting;
* the listening socket's queue size as ``ss -ltn`` shows it (Send-Q).

How it works: this file plays two roles (``--role``). The orchestrator (the
default) starts the server with ``pbgreen.testing.processes``, then K
``client`` processes running this file again. Each client makes its
sockets, prints READY, and waits for ``go T`` on stdin; the orchestrator
sends every client the same ``T`` (CLOCK_MONOTONIC, shared by processes on
Linux) a little in the future, so all bursts leave together. A client then
calls a non-blocking ``connect`` on every socket in a tight loop and waits
with ``selectors`` for each connect to complete and for its greeting; the
clients use the standard library only (and ``pbgreen.banana`` to decode the
offer), so both servers get exactly the same treatment. Every process is
stopped in a ``finally``; a client whose orchestrator vanished exits at
stdin EOF or by ``signal.alarm``.

    .venv/bin/python benchmarks/connect_burst.py                 # N=1000, K=4, 30 s
    .venv/bin/python benchmarks/connect_burst.py --connects 5000 --processes 8
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SERVERS = {"pbgreen": "server_pbgreen.py", "twisted": "server_twisted.py"}


# --------------------------------------------------------------------------- client role


def run_client(port: int, count: int, deadline: float) -> None:
    from pbgreen import banana

    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    for s in socks:
        s.setblocking(False)
    print("READY", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return
    t0 = float(line[1])
    while time.monotonic() < t0:  # everyone leaves at the same moment
        time.sleep(max(0.0, min(0.01, t0 - time.monotonic())))

    outcome = {"refused": 0, "reset": 0, "other": {}, "greeted": 0}
    greeted_at: list[float] = []
    connected_at: list[float] = []
    state: dict[socket.socket, object] = {}  # None: connecting; a Decoder once connected
    sel = selectors.DefaultSelector()

    def fail(s: socket.socket, code: int | None, name: str | None = None) -> None:
        if code == errno.ECONNREFUSED:
            outcome["refused"] += 1
        elif code in (errno.ECONNRESET, errno.EPIPE) or name == "closed before greeting":
            outcome["reset"] += 1
        else:
            key = name or errno.errorcode.get(code or 0, str(code))
            outcome["other"][key] = outcome["other"].get(key, 0) + 1
        sel.unregister(s)
        del state[s]

    for s in socks:
        code = s.connect_ex(("127.0.0.1", port))
        if code in (0, errno.EINPROGRESS):
            state[s] = None
            sel.register(s, selectors.EVENT_WRITE)
        elif code == errno.ECONNREFUSED:
            outcome["refused"] += 1
        else:
            name = errno.errorcode.get(code, str(code))
            outcome["other"][name] = outcome["other"].get(name, 0) + 1
    sent = time.monotonic() - t0
    end = t0 + deadline
    while state and time.monotonic() < end:
        for key, _ in sel.select(max(0.0, end - time.monotonic())):
            s = key.fileobj
            decoder = state.get(s)
            if decoder is None:  # the connect completed (or failed)
                code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    fail(s, code)
                    continue
                connected_at.append(time.monotonic() - t0)
                state[s] = banana.Decoder()
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except OSError as exc:
                fail(s, exc.errno)
                continue
            if not data:
                fail(s, None, "closed before greeting")
                continue
            try:
                expressions = decoder.feed(data)
            except Exception:
                fail(s, None, "not a banana greeting")
                continue
            if not expressions:
                continue
            offer = expressions[0]
            if isinstance(offer, list) and b"pb" in offer:
                outcome["greeted"] += 1
                greeted_at.append(time.monotonic() - t0)
            else:
                outcome["other"][f"offer {offer!r:.40}"] = \
                    outcome["other"].get(f"offer {offer!r:.40}", 0) + 1
            sel.unregister(s)
            del state[s]
    outcome["never_connected"] = sum(1 for d in state.values() if d is None)
    outcome["connected_not_greeted"] = sum(1 for d in state.values() if d is not None)
    outcome["connected"] = len(connected_at)
    outcome["greeted_at"] = greeted_at
    outcome["burst_sent_in"] = sent
    sel.close()
    for s in socks:
        s.close()
    print(json.dumps(outcome), flush=True)


# --------------------------------------------------------------------------- orchestrator


def listen_queue(port: int) -> int | None:
    """The listening socket's backlog (Send-Q of ``ss -ltn``), if ``ss`` exists."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10).stdout.split()
    return int(out[2]) if len(out) >= 3 else None


def measure(system: str, connects: int, processes: int, deadline: float) -> dict:
    from pbgreen.testing.processes import start

    shares = [connects // processes + (1 if i < connects % processes else 0)
              for i in range(processes)]
    clients = []
    with start([sys.executable, os.path.join(HERE, SERVERS[system])], label=f"{system} server",
               grace=5) as server:
        queue = listen_queue(server.port)
        try:
            for n in shares:
                clients.append(start(
                    [sys.executable, os.path.abspath(__file__), "--role", "client",
                     "--port", str(server.port), "--count", str(n), "--deadline", str(deadline),
                     "--alarm", str(int(deadline) + 120)],
                    ready="^READY$", timeout=60, label="burst client"))
            t0 = time.monotonic() + 0.3
            for child in clients:
                child.send(f"go {t0!r}\n")
            reports = []
            for child in clients:
                line = child.expect(r"^\{", timeout=deadline + 60).string
                reports.append(json.loads(line))
            server_alive = server.returncode is None
        finally:
            for child in clients:
                child.stop(grace=5)
        server_log_lines = len(server.stderr.splitlines())
    greeted_at = sorted(t for r in reports for t in r["greeted_at"])
    other: dict[str, int] = {}
    for r in reports:
        for k, v in r["other"].items():
            other[k] = other.get(k, 0) + v
    total = {k: sum(r[k] for r in reports)
             for k in ("greeted", "refused", "reset", "never_connected",
                       "connected_not_greeted", "connected")}
    return {
        "system": system, "connects": connects, "processes": processes, "deadline": deadline,
        "listen_queue": queue, **total, "other": other,
        "last_greeting": greeted_at[-1] if greeted_at else None,
        "median_greeting": statistics.median(greeted_at) if greeted_at else None,
        "p99_greeting": (greeted_at[max(0, int(len(greeted_at) * 0.99) - 1)]
                         if greeted_at else None),
        "burst_sent_in": max(r["burst_sent_in"] for r in reports),
        "server_alive": server_alive, "server_log_lines": server_log_lines,
    }


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def report(results: list[dict]) -> None:
    rows = [
        ("listen queue (ss Send-Q)", lambda r: str(r["listen_queue"])),
        ("greeted", lambda r: f"{r['greeted']} / {r['connects']}"),
        ("refused (ECONNREFUSED)", lambda r: str(r["refused"])),
        ("reset / closed before greeting", lambda r: str(r["reset"])),
        ("other errors", lambda r: ", ".join(f"{k}: {v}" for k, v in r["other"].items())
         or "0"),
        ("never connected by the deadline", lambda r: str(r["never_connected"])),
        ("connected, never greeted", lambda r: str(r["connected_not_greeted"])),
        ("median time to greeting", lambda r: _s(r["median_greeting"])),
        ("99th percentile", lambda r: _s(r["p99_greeting"])),
        ("time until the last greeting", lambda r: _s(r["last_greeting"])),
        ("burst left the clients in", lambda r: _s(r["burst_sent_in"])),
        ("server log lines", lambda r: str(r["server_log_lines"])),
    ]
    first = results[0]
    print(f"\nconnect burst: {first['connects']} connects from {first['processes']} processes "
          f"at once, deadline {first['deadline']:g} s\n")
    width = max(len(name) for name, _ in rows)
    header = f"{'':<{width}}  " + "  ".join(f"{r['system']:>20}" for r in results)
    print(header)
    print("-" * len(header))
    for name, cell in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(r):>20}" for r in results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connects", type=int, default=1000, help="connects in the burst (1000)")
    p.add_argument("--processes", type=int, default=4, help="client processes sharing it (4)")
    p.add_argument("--deadline", type=float, default=30.0,
                   help="seconds from the burst to give up on a greeting (30)")
    p.add_argument("--systems", default="pbgreen,twisted", help="pbgreen,twisted or one")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--role", default="orchestrate", choices=["orchestrate", "client"],
                   help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--alarm", type=int, default=900, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    if args.role == "client":
        signal.alarm(args.alarm)  # never outlive a vanished orchestrator
        run_client(args.port, args.count, args.deadline)
        return 0
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SERVERS)
    if unknown:
        p.error(f"unknown system(s) {sorted(unknown)}; choose from {sorted(SERVERS)}")
    results = [measure(system, args.connects, args.processes, args.deadline)
               for system in systems]
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
