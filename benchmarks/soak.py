"""Soak test: many reconnecting clients keep calling while the server is killed and restarted.

Usage:
    python benchmarks/soak.py [--seconds 300] [--restart-every 30]
                              [--processes 4] [--clients 50] [--json FILE]

The orchestrator (this script) picks a free port on 127.0.0.1, starts a
pbgreen server process on it (this script with ``--server PORT``), then
``--processes`` client processes (``--worker``), each running ``--clients``
greenlets with one ``PBClient(reconnect=True, call_timeout=5, timeout=10)``
each (200 connections by default). Every greenlet calls ``echo(token)`` in a
loop through ``client.getRootObject()``, with a token unique to that call.

Every ``--restart-every`` seconds the orchestrator kills the server with
SIGKILL and starts it again on the same port. When ``--seconds`` have passed
the workers stop starting calls, give the calls under way ``call_timeout`` +
10 s to end, and report:

* calls made, answered, raised (by exception class);
* calls lost without an error (neither answered nor raised by then: must be 0);
* calls answered twice (an answer carrying the token of a call that had
  already ended: must be 0) and wrong answers (any other token: must be 0);
* the longest wait of any call (``callRemote`` alone) and of any
  ``getRootObject()`` (which waits while a reconnection is under way);
* reconnect times: from the failure that showed a greenlet its connection
  was lost to its next successful call, and from the moment the restarted
  server printed its port to each greenlet's first successful call after it
  (``time.monotonic`` is one clock for every process on Linux).

The orchestrator prints one table. Only pbgreen's public API is used.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

CALL_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
DRAIN = CALL_TIMEOUT + 10.0  # how long calls under way get to end after the run


# ------------------------------------------------------------------ the server


def run_server(port: int) -> None:
    import pbgreen as pb

    class Root(pb.Root):
        def remote_echo(self, token):
            return token

    server = pb.PBServer(Root(), port=port, host="127.0.0.1")
    server.start()
    print("PORT", server.address[1], flush=True)
    server.serve_forever()


# ------------------------------------------------------------------ a client process


def run_worker(port: int, clients: int, seconds: float) -> None:
    import gevent

    import pbgreen as pb

    end = time.monotonic() + seconds
    stats = {"made": 0, "answered": 0, "raised": {}, "twice": 0, "wrong": 0,
             "max_call_wait": 0.0, "max_root_wait": 0.0, "root_timeouts": 0,
             "recoveries": [], "connect_failures": 0}
    in_flight: dict[int, float] = {}  # greenlet number -> when its call started

    def one(number: int) -> None:
        try:
            client = pb.PBClient("127.0.0.1", port, reconnect=True, timeout=CONNECT_TIMEOUT,
                                 call_timeout=CALL_TIMEOUT)
        except OSError:
            stats["connect_failures"] += 1
            return
        lost_at = None
        sequence = 0
        try:
            while time.monotonic() < end:
                asked = time.monotonic()
                try:
                    root = client.getRootObject()
                except TimeoutError:
                    stats["root_timeouts"] += 1
                    lost_at = lost_at or asked
                    continue
                finally:
                    stats["max_root_wait"] = max(stats["max_root_wait"],
                                                 time.monotonic() - asked)
                sequence += 1
                token = f"{number}:{sequence}"
                stats["made"] += 1
                started = in_flight[number] = time.monotonic()
                try:
                    answer = root.callRemote("echo", token)
                except Exception as exc:
                    name = type(exc).__name__
                    stats["raised"][name] = stats["raised"].get(name, 0) + 1
                    lost_at = lost_at or time.monotonic()
                    continue
                finally:
                    del in_flight[number]
                    stats["max_call_wait"] = max(stats["max_call_wait"],
                                                 time.monotonic() - started)
                if answer == token:
                    stats["answered"] += 1
                    if lost_at is not None:
                        stats["recoveries"].append((lost_at, time.monotonic()))
                        lost_at = None
                    continue
                try:
                    other, seq = (int(part) for part in str(answer).split(":"))
                except ValueError:
                    other, seq = -1, -1
                if other == number and seq < sequence:
                    stats["twice"] += 1  # the answer of a call that had already ended
                else:
                    stats["wrong"] += 1
        finally:
            client.close()

    greenlets = [gevent.spawn(one, number) for number in range(clients)]
    gevent.joinall(greenlets, timeout=max(0.0, end - time.monotonic()) + DRAIN)
    stats["lost"] = len(in_flight)  # calls that neither returned nor raised
    stats["stuck_greenlets"] = sum(1 for g in greenlets if not g.dead)
    gevent.killall(greenlets, timeout=5)
    print("RESULT", json.dumps(stats), flush=True)


# ------------------------------------------------------------------ the orchestrator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    return (f"min {values[0]:.3f}  median {statistics.median(values):.3f}  "
            f"p99 {p99:.3f}  max {values[-1]:.3f}  (n={len(values)})")


def orchestrate(args: argparse.Namespace) -> int:
    from pbgreen.testing.processes import Child, start

    me = os.path.abspath(__file__)
    port = free_port()

    def start_server() -> Child:
        deadline = time.monotonic() + 10
        while True:
            try:
                return start([sys.executable, me, "--server", str(port)], timeout=20,
                             stdin=subprocess.DEVNULL, label="soak server")
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    server = start_server()
    ready_times = [time.monotonic()]
    kills = []
    workers = [Child([sys.executable, me, "--worker", str(port), str(args.clients),
                      str(args.seconds)], stdin=subprocess.DEVNULL, stderr=None,
                     label=f"soak worker {i}") for i in range(args.processes)]
    began = time.monotonic()
    print(f"soak: {args.processes} x {args.clients} clients on 127.0.0.1:{port} for "
          f"{args.seconds:g} s, server killed every {args.restart_every:g} s", flush=True)
    try:
        while True:
            next_kill = began + args.restart_every * (len(kills) + 1)
            if next_kill > began + args.seconds - 1:
                break
            time.sleep(max(0.0, next_kill - time.monotonic()))
            server.kill()
            kills.append(time.monotonic())
            server = start_server()
            ready_times.append(time.monotonic())
            print(f"  {kills[-1] - began:6.1f} s: killed; back after "
                  f"{ready_times[-1] - kills[-1]:.2f} s", flush=True)
        results = []
        for worker in workers:
            found = worker.expect(r"^RESULT (.*)$", timeout=args.seconds + DRAIN + 60)
            results.append(json.loads(found.group(1)))
    finally:
        for worker in workers:
            worker.stop(grace=1)
        server.stop()

    total = {"made": 0, "answered": 0, "twice": 0, "wrong": 0, "lost": 0,
             "stuck_greenlets": 0, "root_timeouts": 0, "connect_failures": 0}
    raised: dict[str, int] = {}
    max_call = max_root = 0.0
    from_loss, from_ready = [], []
    for result in results:
        for key in total:
            total[key] += result[key]
        for name, count in result["raised"].items():
            raised[name] = raised.get(name, 0) + count
        max_call = max(max_call, result["max_call_wait"])
        max_root = max(max_root, result["max_root_wait"])
        for lost_at, served_at in result["recoveries"]:
            from_loss.append(served_at - lost_at)
            back = max((t for t in ready_times if t <= served_at), default=None)
            if back is not None and back > ready_times[0]:
                from_ready.append(served_at - back)

    rows = [
        ("connections", f"{args.processes * args.clients} ({args.processes} processes x "
                        f"{args.clients})"),
        ("duration / restarts", f"{args.seconds:g} s / {len(kills)} (SIGKILL every "
                                f"{args.restart_every:g} s)"),
        ("server down (kill -> PORT)", quantiles([r - k for k, r in
                                                  zip(kills, ready_times[1:])])),
        ("calls made", f"{total['made']}"),
        ("calls answered", f"{total['answered']}"),
        ("calls raised", ", ".join(f"{n} {c}" for n, c in sorted(raised.items())) or "0"),
        ("calls lost without an error", f"{total['lost']}  (must be 0)"),
        ("calls answered twice", f"{total['twice']}  (must be 0)"),
        ("wrong answers", f"{total['wrong']}  (must be 0)"),
        ("longest call wait", f"{max_call:.3f} s  (call_timeout {CALL_TIMEOUT:g} s)"),
        ("longest getRootObject wait", f"{max_root:.3f} s  ({total['root_timeouts']} timed "
                                       "out)"),
        ("first connections failed", f"{total['connect_failures']}"),
        ("stuck greenlets at the end", f"{total['stuck_greenlets']}"),
        ("reconnect: loss -> next call ok (s)", quantiles(from_loss)),
        ("reconnect: server back -> call ok (s)", quantiles(from_ready)),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "kills": kills, "ready": ready_times,
                       "results": results}, f)
    ok = total["lost"] == 0 and total["twice"] == 0 and total["wrong"] == 0 \
        and total["stuck_greenlets"] == 0
    print("\nOK" if ok else "\nFAILED: see the rows marked 'must be 0'")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--restart-every", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50, help="connections per process")
    parser.add_argument("--json", help="also save the raw figures to this file")
    parser.add_argument("--server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("PORT", "CLIENTS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server is not None:
        run_server(args.server)
        return 0
    if args.worker is not None:
        port, clients, seconds = args.worker
        run_worker(int(port), int(clients), float(seconds))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
