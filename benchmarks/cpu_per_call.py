"""CPU per call of pbgreen itself: server and client in one process, one socket.

Both ends run in this process over a real loopback TCP connection, so the
figure is the whole cost of one call on both sides (jelly, banana, the
reader, the workers, the writer, the hub) and ``time.process_time()``
measures it exactly, however loaded the machine is. Other processes only
add noise to wall-clock time, which is not used here.

Workloads (as in ``run.py``):

* ``seq``: sequential ``callRemote("echo", "hello network")``.
* ``d``: 100 ``callRemoteAsync`` in flight, then their answers.

Run it against any checkout to compare two versions of the code::

    PYTHONPATH=/path/to/tree python benchmarks/cpu_per_call.py [--calls 20000] [--repeat 5]

It prints the best (lowest) of ``--repeat`` runs in µs of CPU per call.
On a busy machine even CPU time drifts by a few percent; instruction counts
do not. ``--instructions`` runs each workload under ``valgrind --tool=callgrind``
twice (N and 2N calls) and prints the difference per call.
With ``--profile seq`` or ``--profile d`` it prints a cProfile of that
workload instead.
"""

from __future__ import annotations

import argparse
import time

import gevent

import pbgreen as pb

PAYLOAD = "hello network"
BATCH = 100


class _Echo(pb.Root):
    def remote_echo(self, x):
        return x


def _sequential(root, n: int) -> None:
    call = root.callRemote
    for _ in range(n):
        call("echo", PAYLOAD)


def _in_flight(root, n: int) -> None:
    call_async = root.callRemoteAsync
    for _ in range(max(1, n // BATCH)):
        pending = [call_async("echo", PAYLOAD) for _ in range(BATCH)]
        for result in pending:
            result.get()


WORKLOADS = {"seq": _sequential, "d": _in_flight}


def measure(workload: str, calls: int = 20_000, repeat: int = 5) -> float:
    """Best-of-``repeat`` CPU seconds per call of ``workload`` (``seq`` or ``d``)."""
    run = WORKLOADS[workload]
    server = pb.PBServer(_Echo(), port=0, host="127.0.0.1")
    server.start()
    client = pb.PBClient("127.0.0.1", server.address[1])
    try:
        root = client.getRootObject()
        run(root, min(calls, 2000))  # warm up: workers, caches, allocator
        best = float("inf")
        for _ in range(repeat):
            start = time.process_time()
            run(root, calls)
            best = min(best, (time.process_time() - start) / calls)
        return best
    finally:
        client.close()
        server.stop(timeout=2)


def profile(workload: str, calls: int) -> None:
    """Print a cProfile of ``calls`` calls of ``workload`` (both ends)."""
    import cProfile
    import pstats

    server = pb.PBServer(_Echo(), port=0, host="127.0.0.1")
    server.start()
    client = pb.PBClient("127.0.0.1", server.address[1])
    try:
        root = client.getRootObject()
        WORKLOADS[workload](root, 2000)
        profiler = cProfile.Profile()
        profiler.enable()
        WORKLOADS[workload](root, calls)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(int(__import__("os").environ.get("TOP", "30")))
    finally:
        client.close()
        server.stop(timeout=2)


def instructions(workload: str, calls: int) -> float:
    """Instructions per call of ``workload``, counted by callgrind (``calls`` and ``2 * calls``)."""
    import os
    import re
    import subprocess
    import sys
    import tempfile

    counts = []
    for n in (calls, 2 * calls):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
                 sys.executable, __file__, "--only", workload, "--calls", str(n), "--repeat", "1"],
                capture_output=True, text=True, env=os.environ, check=True)
        counts.append(int(re.search(r"Collected : (\d+)", done.stderr).group(1)))
    return (counts[1] - counts[0]) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(WORKLOADS))
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per call with callgrind (slow; needs valgrind)")
    parser.add_argument("--only", choices=sorted(WORKLOADS), help="run just this workload")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.calls)
        return
    print(f"pbgreen from {pb.__file__}")
    if args.instructions:
        for name in [args.only] if args.only else ["seq", "d"]:
            count = instructions(name, args.calls)
            print(f"{name:>4}: {count:8.0f} instructions per call (callgrind)")
        return
    for name in [args.only] if args.only else ["seq", "d"]:
        per_call = measure(name, args.calls, args.repeat)
        print(f"{name:>4}: {per_call * 1e6:6.2f} µs CPU per call (best of {args.repeat})")


if __name__ == "__main__":
    gevent.get_hub()
    main()
