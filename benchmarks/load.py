"""Hostile clients: what one bad connection costs a PB server; pbgreen vs Twisted PB.

Three scenarios, each run on a fresh server of each system in the same run
(``server_pbgreen.py``, ``server_twisted.py``; both serve ``echo`` and
``blob``, a 64 KiB bytes answer):

(a) never-reading client: a raw socket sends N calls to ``blob`` (64 KiB
    answers) and never reads a byte. Measured: the server's current RSS
    (VmRSS from /proc/PID/status) before and the peak of samples taken every
    20 ms during a fixed window and at its end; how many calls the client
    could send in the window; a bystander's latency meanwhile.
(b) flood of no-event messages: a raw socket sends about 20 MB of valid
    messages that produce no event, ``['version', 6]`` and answer-less calls
    to an object id that does not exist, as fast as the server takes them,
    then one ``echo`` call: its answer says the flood has been processed.
    Measured: time to send and to process the flood, the bystander's answers
    and latency meanwhile.
(c) quadratic refusal: a raw socket sends one call whose arguments are
    about 20,000 ``['remote', n]`` references followed by an instance of an
    unregistered class (``['some.module.Unregistered', ['dictionary']]``).
    Measured: time until the error answer arrives, and the bystander's
    latency meanwhile.

The bystander is a well-behaved client on its own connection: it calls
``echo(b"ping")``, waits for the answer, pauses ``--interval`` seconds,
again. Its latency under attack is compared with its latency on the same
server while idle, measured just before.

How it works: this file plays three roles (``--role``). The orchestrator
(the default) starts, per system and scenario, the server, then a
``bystander`` and an ``attacker`` process running this file again, all on
127.0.0.1, through ``pbgreen.testing.processes``. Both clients speak PB by
hand over a plain blocking socket (``pbgreen.banana`` encodes and decodes;
WIRE.md section 2 has the handshake), so the same bytes go to both servers
and no client library is measured. The orchestrator samples the server's
RSS while it waits for the attacker's report, then stops every process:
in a ``finally`` on success, error and Ctrl-C, on SIGTERM (turned into
``SystemExit``), and a child whose orchestrator vanished exits at stdin EOF
or by ``signal.alarm``.

    .venv/bin/python benchmarks/load.py            # N=10,000, 20 MB, 20,000 refs
    .venv/bin/python benchmarks/load.py --quick    # N=1,000, 2 MB, 2,000 refs
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from run import emit, read_tagged, render_table  # noqa: E402

from pbgreen import banana  # noqa: E402
from pbgreen.testing.processes import Child, ChildError, ChildTimeout, start  # noqa: E402

SYSTEMS = ("pbgreen", "twisted")
SYSTEM_TITLES = {"pbgreen": "pbgreen", "twisted": "Twisted PB"}
SERVERS = {"pbgreen": "server_pbgreen.py", "twisted": "server_twisted.py"}
SCENARIOS = "abc"
UNKNOWN_ID = 999_999  # an object id no server has
UNREGISTERED = [b"some.module.Unregistered", [b"dictionary"]]
SAMPLE_EVERY = 0.02  # seconds between RSS samples


# --------------------------------------------------------------------------
# PB by hand: the connector's side of the handshake, calls, reading answers.
# --------------------------------------------------------------------------


def call(request_id, object_id, method, args=(), answer=True):
    """A ``message`` s-expression: a call with positional args (already jellied)."""
    return [b"message", request_id, object_id, method, int(answer), [b"tuple", *args],
            [b"dictionary"]]


def connect(port, timeout):
    """A socket that has done PB's opening: dialect pb chosen, our version sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = banana.Decoder()  # no vocabulary before the dialect is chosen
    offer = []
    while not offer:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("server closed the connection before offering dialects")
        offer = decoder.feed(data)
    # The acceptor says nothing more until we answer, so nothing is left over.
    if not isinstance(offer[0], list) or b"pb" not in offer[0]:
        raise ConnectionError(f"server does not offer dialect pb: {offer[0]!r}")
    sock.sendall(banana.encode(b"pb", vocab=False) + banana.encode([b"version", 6]))
    return sock


class Answers:
    """Reads the server's messages until the answer (or error) to one request."""

    def __init__(self, sock):
        self.sock = sock
        self.decoder = banana.Decoder(vocab=True)
        self.others = 0  # messages that were not the answer waited for (version, decref)
        self.ready = deque()

    def wait(self, request_id, deadline):
        """("answer" | "error", value) for request_id; TimeoutError at the deadline."""
        while True:
            while self.ready:
                msg = self.ready.popleft()
                if (isinstance(msg, list) and len(msg) == 3 and msg[0] in (b"answer", b"error")
                        and msg[1] == request_id):
                    return msg[0].decode(), msg[2]
                self.others += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(262144)
            except socket.timeout:
                raise TimeoutError("no answer") from None
            if not data:
                raise ConnectionError("server closed the connection")
            self.ready.extend(self.decoder.feed(data))


class StdinLines:
    """Commands from the orchestrator, one per line, read without Python's buffer
    (so ``select`` on fd 0 never misses a line already read)."""

    def __init__(self):
        self.buf = b""
        self.eof = False

    def get(self, timeout):
        """The next line, or None after ``timeout`` seconds; "" at EOF."""
        while b"\n" not in self.buf:
            if self.eof:
                return ""
            ready, _, _ = select.select([0], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(0, 4096)
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()


# --------------------------------------------------------------------------
# The bystander: echo, wait, pause, again.
# --------------------------------------------------------------------------


def bystander(args):
    sock = connect(args.port, timeout=10)
    answers = Answers(sock)
    emit("READY")
    commands = StdinLines()
    request_id = 0
    while True:
        command = commands.get(None)
        if command == "":
            break
        if command != "start":
            continue  # a "stop" for a round that ended by itself
        latencies, answered, timeouts, error = [], 0, 0, None
        started = time.monotonic()
        while True:
            command = commands.get(args.interval)
            if command is not None:
                break
            request_id += 1
            t0 = time.perf_counter()
            try:
                sock.sendall(banana.encode(call(request_id, b"root", b"echo", [b"ping"])))
                kind, value = answers.wait(request_id, time.monotonic() + args.call_timeout)
                if kind != "answer" or value != b"ping":
                    error = f"echo gave {kind} {value!r}"[:200]
                else:
                    answered += 1
            except TimeoutError:
                timeouts += 1
                error = f"no answer within {args.call_timeout:g} s"
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            latencies.append(time.perf_counter() - t0)  # a call with no answer: the time waited
            if error:
                break  # the connection's state is unknown now: end the round
        emit("RESULT", {"latencies": latencies, "answered": answered, "timeouts": timeouts,
                        "error": error, "seconds": time.monotonic() - started})
        if command == "":
            break
    sock.close()


# --------------------------------------------------------------------------
# The attacker: one scenario's bytes, prepared before "go".
# --------------------------------------------------------------------------


def flood_chunks(total_bytes, chunk_bytes=1 << 20):
    """~total_bytes of ['version', 6] and answer-less calls to UNKNOWN_ID, in chunks."""
    version = banana.encode([b"version", 6])
    chunks, size, request_id = [], 0, 1
    while size < total_bytes:
        parts, chunk_size = [], 0
        while chunk_size < chunk_bytes:
            request_id += 1  # 1 is the closing echo's
            msg = banana.encode(call(request_id, UNKNOWN_ID, b"x", answer=False))
            parts += [version, msg]
            chunk_size += len(version) + len(msg)
        chunks.append(b"".join(parts))
        size += chunk_size
    return chunks


def attacker(args):
    sock = connect(args.port, timeout=10)
    answers = Answers(sock)
    if args.scenario == "a":
        msgs = [banana.encode(call(i, b"root", b"blob")) for i in range(1, args.calls + 1)]
        batches = [msgs[i:i + 100] for i in range(0, len(msgs), 100)]
        emit("READY", {"bytes": sum(map(len, msgs))})
    elif args.scenario == "b":
        chunks = flood_chunks(int(args.flood_mb * 1e6))
        emit("READY", {"bytes": sum(map(len, chunks))})
    else:
        refs = [[b"remote", i] for i in range(1, args.refs + 1)]
        big = banana.encode(call(1, b"root", b"echo", [*refs, UNREGISTERED]))
        emit("READY", {"bytes": len(big)})
    commands = StdinLines()
    if commands.get(None) != "go":
        return
    t0 = time.monotonic()
    deadline = t0 + args.deadline
    report = {}
    try:
        if args.scenario == "a":
            report["calls"] = 0
            for batch in batches:
                sock.settimeout(max(0.001, t0 + args.window - time.monotonic()))
                try:
                    sock.sendall(b"".join(batch))
                except socket.timeout:  # the server stopped reading: back-pressure
                    report["blocked_s"] = time.monotonic() - t0
                    break
                report["calls"] += len(batch)
            report["send_s"] = time.monotonic() - t0
        elif args.scenario == "b":
            report["sent_bytes"] = 0
            for chunk in chunks:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.sendall(chunk)
                report["sent_bytes"] += len(chunk)
            report["send_s"] = time.monotonic() - t0
            sock.sendall(banana.encode(call(1, b"root", b"echo", [b"done"])))
            kind, _value = answers.wait(1, deadline)
            report.update(kind=kind, processed_s=time.monotonic() - t0)
        else:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(big)
            report["send_s"] = time.monotonic() - t0
            kind, value = answers.wait(1, deadline)
            report.update(kind=kind, answer_s=time.monotonic() - t0, other_messages=answers.others,
                          value=repr(value)[:300])
    except (OSError, TimeoutError) as exc:  # socket.timeout is both
        report["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        report["error_s"] = time.monotonic() - t0
    emit("SENT" if args.scenario == "a" else "DONE", report)
    commands.get(None)  # (a): the connection stays open and unread until the next line or EOF
    sock.close()


# --------------------------------------------------------------------------
# Orchestrator.
# --------------------------------------------------------------------------


def vmrss_kb(pid):
    """Current resident set size of a process (VmRSS), in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tagged_json(child, tags, timeout):
    tag, rest = read_tagged(child, tags, timeout)
    return tag, (json.loads(rest) if rest else None)


def client(role, args, port, label, *extra):
    """A bystander or attacker process (this file again) for the server on ``port``."""
    argv = [sys.executable, os.path.abspath(__file__), "--role", role, "--port", str(port),
            "--interval", str(args.interval), "--call-timeout", str(args.call_timeout),
            "--alarm", str(args.alarm), *extra]
    return Child(argv, stderr=None, cwd=ROOT, label=label, grace=2)


def run_scenario(args, system, scenario, log_dir):
    """One fresh server of ``system`` under one scenario; the numbers (never raises)."""
    res = {"system": system, "scenario": scenario}
    children = []
    log_path = os.path.join(log_dir, f"{system}-{scenario}.log")
    try:
        server = start([sys.executable, os.path.join(HERE, SERVERS[system])], timeout=30,
                       stderr=log_path, cwd=ROOT, label=f"{system} server", grace=5)
        children.append(server)
        by = client("bystander", args, server.port, f"{system} bystander")
        children.append(by)
        read_tagged(by, ("READY",), 30)
        by.send("start\n")  # the baseline: the same bystander on the idle server
        time.sleep(args.idle)
        by.send("stop\n")
        res["idle"] = tagged_json(by, ("RESULT",), args.call_timeout + 10)[1]
        attack = client("attacker", args, server.port, f"{system} attacker ({scenario})",
                        "--scenario", scenario, "--calls", str(args.calls),
                        "--flood-mb", str(args.flood_mb), "--refs", str(args.refs),
                        "--window", str(args.window), "--deadline", str(args.deadline))
        children.append(attack)
        res["attack_bytes"] = tagged_json(attack, ("READY",), 120)[1]["bytes"]
        res["rss_before_kb"] = rss = vmrss_kb(server.pid)
        samples = [rss]
        cpu0 = cpu_s(server.pid)
        by.send("start\n")
        attack.send("go\n")
        t0 = time.monotonic()
        end = t0 + (args.window if scenario == "a" else args.deadline + 5)
        while time.monotonic() < end:
            try:
                tag, report = tagged_json(attack, ("SENT", "DONE"), SAMPLE_EVERY)
                res["attack"] = report
                if tag == "DONE":
                    break
            except ChildTimeout:
                pass
            samples.append(vmrss_kb(server.pid))
        res["window_s"] = time.monotonic() - t0
        by.send("stop\n")
        res["during"] = tagged_json(by, ("RESULT",), args.call_timeout + 10)[1]
        res["rss_end_kb"] = vmrss_kb(server.pid)
        samples.append(res["rss_end_kb"])
        res["rss_peak_kb"] = max(s for s in samples if s is not None)
        res["rss_samples"] = len(samples)
        res["server_cpu_s"] = cpu_s(server.pid) - cpu0
        if "attack" not in res:
            res["attack"] = {"error": f"no report within {res['window_s']:.0f} s"}
    except (ChildError, OSError, ValueError, KeyError, TypeError) as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for child in reversed(children):  # the attacker first: it holds the server's memory
            child.stop(timeout=5)
    try:
        with open(log_path, "rb") as f:
            res["server_log_lines"] = sum(1 for _ in f)
    except OSError:
        pass
    return res


# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------


def ms(seconds):
    if seconds is None:
        return "-"
    return f"{seconds:,.2f} s" if seconds >= 1 else f"{seconds * 1e3:,.2f} ms"


def mb(kb):
    return "-" if kb is None else f"{kb / 1024:,.1f} MB"


def secs(s):
    return "-" if s is None else (f"{s:.3f} s" if s < 10 else f"{s:.1f} s")


def latency(res, which, stat):
    got = (res or {}).get(which) or {}
    lat = got.get("latencies") or []
    if not lat:
        return None
    return statistics.median(lat) if stat == "median" else max(lat)


def attack(res):
    """The attacker's own report of a scenario run."""
    return res.get("attack") or {}


def report(args, results):
    def get(system, scenario):
        return results.get((system, scenario))

    titles = {
        "a": f"(a) never-reading client: {args.calls:,} calls for a 64 KiB answer, "
             f"never read; {args.window:g} s window",
        "b": f"(b) flood of no-event messages: ~{args.flood_mb:g} MB of ['version', 6] and "
             "answer-less calls to an unknown object id",
        "c": f"(c) quadratic refusal: one call with {args.refs:,} ['remote', n] references, "
             "then an unregistered instance",
    }
    for scenario in args.scenarios:
        rows = []

        def row(title, values, fmt, ratio="lower"):
            """values: {system: number}; ratio: Twisted/pbgreen for lower-is-better."""
            cells = [fmt(values.get(s)) if values.get(s) is not None else "-"
                     for s in args.systems]
            pv, tv = values.get("pbgreen"), values.get("twisted")
            r = ""
            if ratio and pv and tv:
                r = f"{tv / pv:.2f}x" if ratio == "lower" else f"{pv / tv:.2f}x (pb/Tw)"
            rows.append([title, *cells, r])

        def by_system(fn):
            out = {}
            for s in args.systems:
                res = get(s, scenario)
                if res and "error" not in res:
                    out[s] = fn(res)
            return out

        def bystander_rows():
            for stat in ("median", "max"):
                idle = by_system(lambda r, st=stat: latency(r, "idle", st))
                during = by_system(lambda r, st=stat: latency(r, "during", st))
                row(f"bystander {stat} latency, idle server", idle, ms)
                row(f"bystander {stat} latency, under attack", during, ms)
                rel = {s: during[s] / idle[s] for s in during if during.get(s) and idle.get(s)}
                row("  under attack / idle", rel, lambda v: f"{v:,.1f}x")
            answered = by_system(lambda r: (r.get("during") or {}).get("answered", 0))
            row("bystander answers under attack", answered, lambda v: f"{v:,}", ratio="higher")
            row("  per second", by_system(lambda r: answered[r["system"]]
                                          / max(1e-9, (r.get("during") or {}).get("seconds", 0))),
                lambda v: f"{v:,.0f}/s", ratio="higher")

        if scenario == "a":
            row("calls the client sent in the window",
                by_system(lambda r: attack(r).get("calls")), lambda v: f"{v:,}", ratio=None)
            row("  the server stopped reading them after",
                by_system(lambda r: attack(r).get("blocked_s", "never")),
                lambda v: v if isinstance(v, str) else secs(v), ratio=None)
        elif scenario == "b":
            row("flood sent", by_system(lambda r: attack(r).get("sent_bytes", 0) / 1e6),
                lambda v: f"{v:,.1f} MB", ratio=None)
            row("time to send the flood", by_system(lambda r: attack(r).get("send_s")), secs)
            row("time until processed (closing echo answered)",
                by_system(lambda r: attack(r).get("processed_s")), secs)
            row("flood processed per second",
                by_system(lambda r: attack(r).get("sent_bytes", 0) / 1e6
                          / attack(r)["processed_s"] if attack(r).get("processed_s") else None),
                lambda v: f"{v:,.1f} MB/s", ratio="higher")
        else:
            row("time until the error answer", by_system(lambda r: attack(r).get("answer_s")),
                secs)
            row("what came back", by_system(lambda r: attack(r).get("kind")
                                             or attack(r).get("error")),
                str, ratio=None)
            row("other messages before it (decref ...)",
                by_system(lambda r: attack(r).get("other_messages")), lambda v: f"{v:,}",
                ratio=None)
        row("server RSS before", by_system(lambda r: r.get("rss_before_kb")), mb)
        row(f"server RSS peak (sampled every {SAMPLE_EVERY * 1e3:.0f} ms)",
            by_system(lambda r: r.get("rss_peak_kb")), mb)
        row("server RSS at the end", by_system(lambda r: r.get("rss_end_kb")), mb)
        row("server CPU during the attack", by_system(lambda r: r.get("server_cpu_s")), secs)
        bystander_rows()
        row("server log lines", by_system(lambda r: r.get("server_log_lines")),
            lambda v: f"{v:,}", ratio=None)
        print(f"\n{titles[scenario]}")
        print(render_table(["", *(SYSTEM_TITLES[s] for s in args.systems), "Twisted/pbgreen"],
                           rows))
        for system in args.systems:
            res = get(system, scenario) or {}
            notes = [res.get("error"), attack(res).get("error")]
            notes += [f"bystander: {(res.get(k) or {}).get('error')}" for k in ("idle", "during")
                      if (res.get(k) or {}).get("error")]
            for note in filter(None, notes):
                print(f"  {SYSTEM_TITLES[system]}: {note}")
    print("\nTwisted/pbgreen: Twisted's number divided by pbgreen's; above 1.00x pbgreen is "
          "faster or smaller. Rows marked (pb/Tw) are pbgreen's divided by Twisted's "
          "(more is better).")


def orchestrate(args):
    print(f"Hostile clients (pbgreen vs Twisted PB): scenarios {', '.join(args.scenarios)}; "
          f"bystander echo every {args.interval * 1e3:g} ms; fresh server per scenario",
          flush=True)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: 1-minute load average is {load:.2f} before starting; other work on "
              "this machine will skew the numbers", flush=True)
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="pbgreen-load-") as log_dir:
        for scenario in args.scenarios:
            for system in args.systems:
                print(f"  ({scenario}) {SYSTEM_TITLES[system]} ...", end="", flush=True)
                res = results[(system, scenario)] = run_scenario(args, system, scenario, log_dir)
                print(" ERROR" if "error" in res else f" {res['window_s']:.1f}s", flush=True)
    report(args, results)
    print(f"\ntotal wall time {time.monotonic() - started:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([v for v in results.values()], f, indent=1)
        print(f"results written to {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small counts: N=1,000 calls, 2 MB flood, 2,000 references")
    p.add_argument("--calls", type=int, help="(a) calls sent, never read (default 10,000)")
    p.add_argument("--flood-mb", type=float, help="(b) megabytes of flood (default 20)")
    p.add_argument("--refs", type=int, help="(c) references in the call (default 20,000)")
    p.add_argument("--window", type=float,
                   help="(a) seconds the attack and the measurements last (default 5, 3 quick)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="(b), (c): seconds before a scenario is given up (default 60)")
    p.add_argument("--idle", type=float,
                   help="seconds of bystander calls on the idle server (default 1, 0.5 quick)")
    p.add_argument("--interval", type=float, default=0.002,
                   help="bystander's pause between calls (default 0.002 s)")
    p.add_argument("--call-timeout", type=float, default=10.0,
                   help="a bystander call with no answer after this long ends its round")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="pbgreen,twisted or one")
    p.add_argument("--scenarios", default=SCENARIOS, help="subset of abc")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    p.add_argument("--role", default="orchestrate",
                   choices=["orchestrate", "bystander", "attacker"], help=argparse.SUPPRESS)
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--alarm", type=int, default=900, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("calls", 10_000, 1_000), ("flood_mb", 20.0, 2.0),
                              ("refs", 20_000, 2_000), ("window", 5.0, 3.0), ("idle", 1.0, 0.5)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {bad}; choose from {SYSTEMS}")
    args.scenarios = [c for c in SCENARIOS if c in args.scenarios]
    if not args.scenarios:
        p.error("no scenarios selected")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.role == "orchestrate":
        # SIGTERM becomes SystemExit, so the finally blocks stop the children.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return orchestrate(args)
    signal.alarm(args.alarm)  # a child never outlives a stuck run
    (bystander if args.role == "bystander" else attacker)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
