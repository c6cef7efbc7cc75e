"""Scaling out: calls/s and latency with 1 or 2 server processes, direct or through HAProxy.

Many client connections (default: 4 client processes x 50 connections)
call ``echo`` in a loop, each connection waiting for its answer before the
next call, against four setups of the same service
(``server_pbgreen:Root``, served by ``pbgreen serve``):

* ``direct, 1 worker``: ``pbgreen serve --workers 1``, clients connect to it;
* ``direct, 2 workers``: ``pbgreen serve --workers 2`` (one port, two
  processes: the kernel spreads the connections);
* ``haproxy, 1 server``: HAProxy (``pbgreen.testing.haproxy``, the
  configuration ``docs/deploying.md`` shows) in front of one
  ``pbgreen serve --proxy-protocol --workers 1``: what the extra hop costs;
* ``haproxy, 2 servers``: HAProxy in front of two such servers, as with two
  machines behind a balancer.

For each: calls per second over all connections, and the median and 99th
percentile of one call's latency, with the ratio of calls/s to ``direct,
1 worker``. All setups are measured in one run, so compare the ratios.

How it works: this file plays two roles (``--role``). The orchestrator (the
default) starts each setup's processes with ``pbgreen.testing.processes``,
then the client processes, running this file again. A client connects all
its ``PBClient``s, calls ``echo`` once on each, prints ``READY`` and waits
for ``GO`` on stdin, so every client starts together; then each connection
is a greenlet calling ``echo`` for ``--warmup`` seconds (not counted) and
``--seconds`` more (counted: every call's latency, by ``perf_counter``), and
the client prints ``RESULT`` and a JSON line. Every process is stopped in a
``finally``; a client whose orchestrator vanished exits at stdin EOF.

On a machine with few cores the client processes compete with the servers
(and HAProxy) for the same cores: the client side is then part of what is
measured, and the gain from a second worker is smaller than on a server of
its own. The load average is printed before and after.

    .venv/bin/python benchmarks/scale.py                    # 4 x 50 connections, 3 s each
    .venv/bin/python benchmarks/scale.py --quick            # 2 x 20 connections, 1 s each
    .venv/bin/python benchmarks/scale.py --clients 8 --connections 100 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SERVING = r" on 127\.0\.0\.1:(\d+)"   # pbgreen serve's ready line
PAYLOAD = "x" * 32

# name -> (backend processes, --workers per backend, through HAProxy)
SETUPS = {
    "direct, 1 worker": (1, 1, False),
    "direct, 2 workers": (1, 2, False),
    "haproxy, 1 server": (1, 1, True),
    "haproxy, 2 servers": (2, 1, True),
}


# --------------------------------------------------------------------------- client role


def run_client(port: int, connections: int, warmup: float, seconds: float) -> None:
    import gevent

    import pbgreen as pb

    clients = [pb.PBClient("127.0.0.1", port, timeout=60) for _ in range(connections)]
    roots = [client.getRootObject() for client in clients]
    for root in roots:
        assert root.callRemote("echo", PAYLOAD) == PAYLOAD
    pids = [root.callRemote("pid") for root in roots]
    print("READY", json.dumps(pids), flush=True)
    if gevent.get_hub().threadpool.spawn(sys.stdin.readline).get().strip() != "GO":
        return
    latencies: list[float] = []
    start = time.perf_counter()
    counted_from = start + warmup
    end = counted_from + seconds

    def call_in_a_loop(root):
        clock = time.perf_counter
        while True:
            before = clock()
            if before >= end:
                return
            root.callRemote("echo", PAYLOAD)
            if before >= counted_from:
                latencies.append(clock() - before)

    gevent.joinall([gevent.spawn(call_in_a_loop, root) for root in roots], raise_error=True)
    elapsed = time.perf_counter() - counted_from
    print("RESULT", json.dumps({"calls": len(latencies), "seconds": elapsed,
                                "latencies_us": [round(x * 1e6) for x in latencies]}),
          flush=True)
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- orchestrator


def percentile(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pids) -> float:
    """User + system CPU time the processes ``pids`` have used so far (Linux's /proc)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def switches(pids) -> int:
    """Context switches (voluntary and not) the processes ``pids`` have made so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                total += sum(int(line.split()[1]) for line in status
                             if "ctxt_switches:" in line)
        except OSError:
            continue
    return total


def measure(name: str, args: argparse.Namespace) -> dict:
    from pbgreen.testing.haproxy import HAProxy
    from pbgreen.testing.processes import Child, children, start

    backends, workers, balanced = SETUPS[name]
    with ExitStack() as stack:
        servers = []
        for _ in range(backends):
            argv = [sys.executable, "-m", "pbgreen", "serve", "server_pbgreen:Root",
                    "--host", "127.0.0.1", "--port", "0", "--workers", str(workers),
                    "--log-level", "WARNING"]
            if balanced:
                argv.append("--proxy-protocol")
            server = stack.enter_context(start(argv, SERVING, timeout=60, cwd=HERE,
                                               stderr=None))
            servers.append(server)
        port = servers[0].port
        server_pids = set()
        for server in servers:   # with --workers, the workers are the supervisor's children
            server_pids |= children(server.pid) | {server.pid}
        proxy_pids: set[int] = set()
        if balanced:
            proxy = stack.enter_context(HAProxy([("127.0.0.1", s.port) for s in servers]))
            port = proxy.port
            proxy_pids = {proxy.child.pid}
        clients = [stack.enter_context(Child(
            [sys.executable, __file__, "--role", "client", "--port", str(port),
             "--connections", str(args.connections), "--warmup", str(args.warmup),
             "--seconds", str(args.seconds)], stderr=None, label=f"client {n}"))
            for n in range(args.clients)]
        served_by: dict[int, int] = {}   # server pid -> connections
        for client in clients:
            for pid in json.loads(client.expect(r"^READY (.*)$", timeout=120).group(1)):
                served_by[pid] = served_by.get(pid, 0) + 1
        for client in clients:
            client.send("GO\n")
        time.sleep(args.warmup)
        cpu_before = cpu_seconds(server_pids), cpu_seconds(proxy_pids), switches(server_pids)
        reports = []
        for client in clients:
            line = client.expect(r"^RESULT (.*)$", timeout=args.warmup + args.seconds + 60)
            reports.append(json.loads(line.group(1)))
        server_cpu = cpu_seconds(server_pids) - cpu_before[0]
        proxy_cpu = cpu_seconds(proxy_pids) - cpu_before[1]
        server_switches = switches(server_pids) - cpu_before[2]
    latencies = sorted(x for report in reports for x in report["latencies_us"])
    calls_per_s = sum(report["calls"] / report["seconds"] for report in reports)
    calls = len(latencies)
    return {"setup": name, "processes": backends * workers, "calls": calls,
            "calls_per_s": calls_per_s, "p50_ms": percentile(latencies, 0.50) / 1000,
            "p99_ms": percentile(latencies, 0.99) / 1000,
            "server_cpu_us_per_call": server_cpu / calls * 1e6,
            "haproxy_cpu_us_per_call": proxy_cpu / calls * 1e6,
            "server_switches_per_100_calls": server_switches / calls * 100,
            "connections_per_process": sorted(served_by.values(), reverse=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("orchestrator", "client"), default="orchestrator")
    parser.add_argument("--port", type=int)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=50, help="connections per client")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds counted")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; the table shows each setup's median round")
    parser.add_argument("--quick", action="store_true", help="2 x 20 connections, 1 s, 1 round")
    parser.add_argument("--setups", help="comma-separated numbers of the setups to run "
                        "(1-4, in the order of the table)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.role == "client":
        run_client(args.port, args.connections, args.warmup, args.seconds)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks
    if args.quick:
        args.clients, args.connections, args.warmup, args.seconds = 2, 20, 0.5, 1.0
        args.repeats = 1
    names = list(SETUPS)
    if args.setups:
        names = [names[int(n) - 1] for n in args.setups.split(",")]
    print(f"{args.clients} client processes x {args.connections} connections, echo of "
          f"{len(PAYLOAD)} characters, {args.seconds:g} s counted after {args.warmup:g} s; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for round_number in range(args.repeats):   # interleaved, each round in another order
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(measure(name, args))
    results = [sorted(runs, key=lambda r: r["calls_per_s"])[len(runs) // 2]
               for runs in rounds.values()]
    base = next((r for r in results if r["setup"] == "direct, 1 worker"), results[0])
    print(f"\n{'setup':<20} {'calls/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'server CPU':>10} {'HAProxy CPU':>11} {'server switches':>15}  connections per")
    print(f"{'':<20} {'':>8} {'':>6} {'':>7} {'':>7} {'µs/call':>10} {'µs/call':>11} "
          f"{'per 100 calls':>15}  server process")
    for r in results:
        r["ratio"] = r["calls_per_s"] / base["calls_per_s"]
        spread = "/".join(str(n) for n in r["connections_per_process"])
        print(f"{r['setup']:<20} {r['calls_per_s']:>8.0f} {r['ratio']:>6.2f} "
              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['server_cpu_us_per_call']:>10.0f} "
              f"{r['haproxy_cpu_us_per_call']:>11.0f} "
              f"{r['server_switches_per_100_calls']:>15.1f}  {spread}")
    print(f"\nmedian of {args.repeats} interleaved round(s); ratio = calls/s / "
          f"{base['setup']}'s; load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "results": results, "rounds": rounds}, out, indent=2)


if __name__ == "__main__":
    main()
