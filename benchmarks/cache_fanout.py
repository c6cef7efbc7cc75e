"""Cacheable fan-out: one Cacheable, N holders, U updates; pbgreen vs Twisted PB.

The owner process serves one ``Counter`` Cacheable.  A second process holds
N connections to it, each with its own ``RemoteCache`` of the counter (from
``root.callRemote("getCounter")``).  Then the owner runs the setter loop::

    for i in range(U):
        counter.set(i)      # observer.callRemote("set", i) for every observer

and every holder's ``observe_set`` records the value it got.  Measured, for
pbgreen and for Twisted PB in the same run:

* setter time: the loop above, in the owner (``time.perf_counter``).  In
  pbgreen ``observer.callRemote`` queues the update and returns at once; in
  Twisted it returns a Deferred that the setter ignores.
* delivery time: from just before the first ``set`` (owner's
  ``time.monotonic()``) until the last holder has seen the last value (the
  holder's ``time.monotonic()``; CLOCK_MONOTONIC is one clock for every
  process on Linux).
* the owner's peak RSS (``ru_maxrss``), and its RSS once the N holders are
  connected, before the updates; the owner's CPU time; the holder
  process's CPU time, GC time and peak RSS.

Result check: every holder must have seen every update, in order (each
value is the previous one plus one), and end on the last value.  A holder
that misses, repeats or reorders an update makes the system's result an
ERROR, with the details printed.

Processes, all on 127.0.0.1 and started again from this file (``--role``):

* ``owner``: the server (a ``pb.PBServer`` or a Twisted ``PBServerFactory``
  on port 0, prints ``PORT <n>``), which obeys one-line JSON commands on
  stdin: ``observers``, ``run`` (the timed setter loop; answers its timings),
  ``stop`` (answers its RSS and exits).
* ``holders``: N ``pb.PBClient`` in one gevent process, or N
  ``PBClientFactory`` connections in one Twisted reactor.  Prints ``READY``
  once all N hold their cache; ``expect`` arms it for the last value of a
  round, and it prints ``DONE`` when every holder has it.
* ``orchestrate`` (the default): runs one system at a time (pbgreen, then
  Twisted), owner and holders, then the next system, and prints the table.

A system that does not finish its updates within ``--deadline`` seconds is
reported as such (with how far its holders got) and its processes are
killed; the other system still runs.  Every child is killed on success,
error, timeout and SIGTERM; a child whose orchestrator vanished exits at
stdin EOF, or by ``signal.alarm`` as a last resort.

    .venv/bin/python benchmarks/cache_fanout.py            # N=500, U=1000
    .venv/bin/python benchmarks/cache_fanout.py --quick    # N=100, U=200
    .venv/bin/python benchmarks/cache_fanout.py --profile --deadline 170
        # + cProfile of the setter loop, of the owner after it, of the holders
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# Shared helpers of the round-trip benchmark (no side effects on import).
from run import (  # noqa: E402
    connected_nodelay,
    current_rss_kb,
    emit,
    gevent_lines,
    peak_rss_kb,
    read_tagged,
    render_table,
    short_error,
)

from pbgreen.testing.processes import Child  # noqa: E402

SYSTEMS = ("pbgreen", "twisted")
SYSTEM_TITLES = {"pbgreen": "pbgreen", "twisted": "Twisted PB"}
CACHE_CLASS = "cache_fanout.Counter"  # the name both systems put on the wire
CONNECTS_IN_FLIGHT = 50  # holders connect at most this many at a time


def raise_nofile(n_sockets):
    """Raise RLIMIT_NOFILE's soft limit to the hard limit if N sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n_sockets + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def observer_key(observer):
    """Identify an observer by its connection and perspective.

    Twisted hands ``stoppedObserving`` a new observer object, and its
    ``RemoteCacheObserver.__eq__`` raises TypeError under Python 3 (it
    compares brokers with ``<``), so neither identity nor ``==`` works there.
    """
    return id(observer.broker), id(observer.perspective)


def cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class GcClock:
    """Wall time spent in the cyclic garbage collector, via ``gc.callbacks``."""

    def __init__(self):
        self.total = 0.0
        self.collections = 0
        self._t0 = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.total += time.perf_counter() - self._t0
            self.collections += 1
            self._t0 = None


def start_profiler():
    import cProfile
    # cProfile's default clock (wall time).  run.py uses time.process_time,
    # but that is a system call per function event: with the millions of
    # calls here it made the profiled setter loop 25 times slower.  The
    # setter loop never waits, so wall time is its CPU time; in the other
    # two profiles time spent waiting shows up in the poll / hub functions.
    prof = cProfile.Profile()
    prof.enable()
    return prof


def profile_text(prof, top):
    import io
    import pstats
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------
# Owner (server) side.
# --------------------------------------------------------------------------


def setter_loop(counter, base, updates, prof_top):
    """The timed loop; returns its timings (same code for both systems)."""
    gc.collect()
    perf = time.perf_counter
    worst = 0.0
    prof = start_profiler() if prof_top else None
    cpu0 = cpu_s()
    t_first = time.monotonic()
    t0 = perf()
    for i in range(base, base + updates):
        s = perf()
        counter.set(i)
        d = perf() - s
        if d > worst:
            worst = d
    elapsed = perf() - t0
    cpu = cpu_s() - cpu0
    result = {"setter_s": elapsed, "t_first": t_first, "worst_set_s": worst,
              "setter_cpu_s": cpu, "observers": len(counter.observers)}
    if prof is not None:
        prof.disable()
        result["profile"] = profile_text(prof, prof_top)
    return result


def owner_pbgreen(args):
    import gevent

    import pbgreen as pb

    raise_nofile(args.holders)
    stats = {"connections": 0, "nodelay_preset": [], "nodelay": []}

    class Counter(pb.Cacheable):
        __module__, __qualname__ = CACHE_CLASS.rsplit(".", 1)

        def __init__(self):
            self.value = -1
            self.observers = {}  # one per (connection, perspective), in arrival order

        def getStateToCacheAndObserveFor(self, perspective, observer):
            self.observers[observer_key(observer)] = observer
            return {"value": self.value}

        def stoppedObserving(self, perspective, observer):
            self.observers.pop(observer_key(observer), None)

        def set(self, value):
            self.value = value
            for observer in self.observers.values():
                observer.callRemote("set", value)

    counter = Counter()

    class Root(pb.Root):
        def remote_getCounter(self):
            return counter

    server = pb.PBServer(Root(), port=0, host=args.host)
    server.start()
    emit(f"PORT {server.address[1]}")
    drain_prof = None  # --profile: everything the owner does after the setter loop
    for line in gevent_lines():
        msg = json.loads(line)
        if msg["cmd"] == "observers":
            # The holders are connected now: look at TCP_NODELAY on their
            # sockets (as pbgreen set it; the benchmark does not set it).
            found = list(connected_nodelay().values())
            stats.update(connections=len(found), nodelay_preset=found, nodelay=found)
            emit("OK", {"observers": len(counter.observers), "rss_kb": current_rss_kb()})
        elif msg["cmd"] == "run":
            # A greenlet that can only run if the setter loop gives up the
            # CPU: pbgreen promises that it never does (the updates are
            # queued and written by other greenlets afterwards).
            ran = []
            canary = gevent.spawn(ran.append, True)
            result = setter_loop(counter, msg["base"], msg["updates"], msg.get("profile"))
            result["setter_yielded"] = bool(ran)
            canary.kill(block=False)
            emit("TIME", result)
            if msg.get("profile") and drain_prof is None:
                drain_prof = start_profiler()
        elif msg["cmd"] == "stop":
            break
    stats["peak_rss_kb"] = peak_rss_kb()
    stats["cpu_s"] = cpu_s()
    if drain_prof is not None:
        drain_prof.disable()
        stats["drain_profile"] = profile_text(drain_prof, args.profile_top)
    emit("STATS", stats)
    try:
        server.stop(timeout=2)
    except Exception as exc:  # the numbers are out already
        sys.stderr.write(f"pbgreen owner: stop failed: {short_error(exc)}\n")


def owner_twisted(args):
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    raise_nofile(args.holders)
    stats = {"connections": 0, "nodelay_preset": [], "nodelay": []}

    class NoDelayBroker(pb.Broker):
        def connectionMade(self):
            before = bool(self.transport.getTcpNoDelay())
            self.transport.setTcpNoDelay(True)
            stats["connections"] += 1
            stats["nodelay_preset"].append(before)
            stats["nodelay"].append(bool(self.transport.getTcpNoDelay()))
            super().connectionMade()

    class Counter(pb.Cacheable):
        __module__, __qualname__ = CACHE_CLASS.rsplit(".", 1)

        def __init__(self):
            self.value = -1
            self.observers = {}  # one per (connection, perspective), in arrival order

        def getStateToCacheAndObserveFor(self, perspective, observer):
            self.observers[observer_key(observer)] = observer
            return {"value": self.value}

        def stoppedObserving(self, perspective, observer):
            self.observers.pop(observer_key(observer), None)

        def set(self, value):
            self.value = value
            for observer in self.observers.values():
                observer.callRemote("set", value)  # a Deferred, ignored

    counter = Counter()

    class Root(pb.Root):
        def remote_getCounter(self):
            return counter

    class Control(LineReceiver):
        delimiter = b"\n"
        drain_prof = None  # --profile: everything the owner does after the setter loop
        stopping = False

        def say(self, tag, obj=None):
            line = tag if obj is None else f"{tag} {json.dumps(obj)}"
            self.transport.write(line.encode() + b"\n")

        def lineReceived(self, line):
            msg = json.loads(line)
            if msg["cmd"] == "observers":
                self.say("OK", {"observers": len(counter.observers), "rss_kb": current_rss_kb()})
            elif msg["cmd"] == "run":
                result = setter_loop(counter, msg["base"], msg["updates"], msg.get("profile"))
                result["setter_yielded"] = False  # a plain loop cannot yield in Twisted
                self.say("TIME", result)
                if msg.get("profile") and self.drain_prof is None:
                    self.drain_prof = start_profiler()
            elif msg["cmd"] == "stop":
                stats["peak_rss_kb"] = peak_rss_kb()
                stats["cpu_s"] = cpu_s()
                if self.drain_prof is not None:
                    self.drain_prof.disable()
                    stats["drain_profile"] = profile_text(self.drain_prof, args.profile_top)
                self.say("STATS", stats)
                self.stopping = True
                self.transport.loseConnection()  # flushes, then connectionLost stops

        def connectionLost(self, reason=None):
            if not self.stopping:
                # The orchestrator is gone or gave up on us.  Leave at once:
                # a clean reactor.stop() would first errback every update
                # still waiting for an answer, and Twisted logs each one
                # ("Unhandled error in Deferred"), hundreds of thousands of
                # tracebacks.
                os._exit(1)
            if reactor.running:
                reactor.stop()

    factory = pb.PBServerFactory(Root())
    factory.protocol = NoDelayBroker
    port = reactor.listenTCP(0, factory, interface=args.host, backlog=CONNECTS_IN_FLIGHT * 2)
    emit(f"PORT {port.getHost().port}")
    stdio.StandardIO(Control())
    reactor.run(installSignalHandlers=False)


# --------------------------------------------------------------------------
# Holder side: N connections, one RemoteCache each.
# --------------------------------------------------------------------------


class Tracker:
    """What the holders saw; shared by the holders of one process."""

    def __init__(self):
        self.caches = []
        self.target = None  # the last value of the current round
        self.left = 0  # holders that have not seen it yet
        self.on_done = None
        self.prof = None  # --profile: the holder process from "expect" to the last update
        self.prof_top = 0
        self.profile = None
        self.gc_clock = GcClock()
        self.cpu_at_arm = self.gc_at_arm = self.cpu_round = self.gc_round = None

    def arm(self, target, profile_top=0):
        self.cpu_at_arm = cpu_s()
        self.gc_at_arm = (self.gc_clock.total, self.gc_clock.collections)
        self.cpu_round = self.gc_round = None
        self.t_first_seen = None
        if profile_top:
            self.prof_top = profile_top
            self.prof = start_profiler()
        self.target = target
        self.left = sum(1 for c in self.caches if c.last != target)
        for c in self.caches:
            c.t_done = None

    def seen(self, cache, value):
        """Called by every holder's observe_set."""
        if value != cache.last + 1 and cache.bad is None:
            cache.bad = f"after {cache.last} got {value}"
        cache.last = value
        cache.count += 1
        if self.t_first_seen is None:
            self.t_first_seen = time.monotonic()
        if value == self.target:
            cache.t_done = time.monotonic()
            self.left -= 1
            if self.left == 0:
                self.cpu_round = cpu_s() - self.cpu_at_arm
                self.gc_round = (self.gc_clock.total - self.gc_at_arm[0],
                                 self.gc_clock.collections - self.gc_at_arm[1])
                if self.prof is not None:
                    self.prof.disable()
                    self.profile = profile_text(self.prof, self.prof_top)
                    self.prof = None
                if self.on_done is not None:
                    self.on_done()

    def report(self, expected_count):
        caches = self.caches
        done = [c.t_done for c in caches if c.t_done is not None]
        counts = [c.count for c in caches]
        bad = [c.bad for c in caches if c.bad is not None]
        return {
            "holders": len(caches),
            "holders_with_last": len(done),
            "t_last": max(done) if done else None,
            "t_first_holder_done": min(done) if done else None,
            "t_first_seen": self.t_first_seen,
            "updates_seen": sum(counts),
            "min_count": min(counts) if counts else 0,
            "max_count": max(counts) if counts else 0,
            "expected_count": expected_count,
            "wrong_count": sum(1 for n in counts if n != expected_count),
            "wrong_last": sum(1 for c in caches if c.last != self.target),
            "out_of_order": len(bad),
            "out_of_order_examples": bad[:3],
            "peak_rss_kb": peak_rss_kb(),
            "profile": self.profile,
            "cpu_round_s": self.cpu_round,
            "gc_round_s": self.gc_round and self.gc_round[0],
            "gc_round_collections": self.gc_round and self.gc_round[1],
        }


def holders_pbgreen(args):
    import gevent
    from gevent.event import Event
    from gevent.pool import Pool

    import pbgreen as pb

    raise_nofile(args.holders)
    tracker = Tracker()

    class RemoteCounter(pb.RemoteCache):
        def setCopyableState(self, state):
            self.last = state["value"]
            self.count = 0
            self.bad = None
            self.t_done = None

        def observe_set(self, value):
            tracker.seen(self, value)

    pb.setUnjellyableForClass(CACHE_CLASS, RemoteCounter)
    clients = []
    nodelay = {"checked": 0, "preset": 0, "after": 0}

    def connect_one(_k):
        client = pb.PBClient(args.host, args.port, timeout=30)
        clients.append(client)
        root = client.getRootObject()
        cache = root.callRemote("getCounter")
        if not isinstance(cache, RemoteCounter):
            raise TypeError(f"getCounter returned {cache!r}")
        tracker.caches.append(cache)

    t0 = time.perf_counter()
    try:
        Pool(CONNECTS_IN_FLIGHT).map(connect_one, range(args.holders))
    except Exception as exc:
        emit("ERR", f"connecting holders: {short_error(exc)}")
        return
    # TCP_NODELAY as pbgreen set it on the N sockets (the benchmark does not set it).
    found = list(connected_nodelay().values())
    nodelay.update(checked=len(found), preset=sum(found), after=sum(found))
    emit("READY", {"holders": len(tracker.caches), "setup_s": time.perf_counter() - t0,
                   "nodelay": nodelay, "rss_kb": current_rss_kb()})

    done = Event()
    tracker.on_done = done.set
    expected_count = 0

    def announce():
        done.wait()
        emit("DONE", tracker.report(expected_count))

    waiter = None
    for line in gevent_lines():
        msg = json.loads(line)
        if msg["cmd"] == "expect":
            expected_count += msg["updates"]
            done.clear()
            tracker.arm(msg["target"], msg.get("profile", 0))
            waiter = gevent.spawn(announce)
            emit("ARMED")
        elif msg["cmd"] == "status":
            emit("STATUS", tracker.report(expected_count))
        elif msg["cmd"] == "quit":
            break
    if waiter is not None:
        waiter.kill(block=False)
    info = {"peak_rss_kb": peak_rss_kb()}
    for client in clients:
        try:
            client.close()
        except Exception:
            pass
    emit("BYE", info)


def holders_twisted(args):
    from twisted.internet import defer, reactor, stdio
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    raise_nofile(args.holders)
    tracker = Tracker()
    nodelay = {"checked": 0, "preset": 0, "after": 0}

    class NoDelayBroker(pb.Broker):
        def connectionMade(self):
            before = bool(self.transport.getTcpNoDelay())
            self.transport.setTcpNoDelay(True)
            nodelay["checked"] += 1
            nodelay["preset"] += before
            nodelay["after"] += bool(self.transport.getTcpNoDelay())
            super().connectionMade()

    class RemoteCounter(pb.RemoteCache):
        def setCopyableState(self, state):
            self.last = state["value"]
            self.count = 0
            self.bad = None
            self.t_done = None

        def observe_set(self, value):
            tracker.seen(self, value)

    pb.setUnjellyableForClass(CACHE_CLASS, RemoteCounter)
    factories = []
    roots = []

    @defer.inlineCallbacks
    def connect_one():
        factory = pb.PBClientFactory()
        factory.protocol = NoDelayBroker
        factories.append(factory)
        reactor.connectTCP(args.host, args.port, factory, timeout=30)
        root = yield factory.getRootObject()
        roots.append(root)
        cache = yield root.callRemote("getCounter")
        if not isinstance(cache, RemoteCounter):
            raise TypeError(f"getCounter returned {cache!r}")
        tracker.caches.append(cache)

    class Commands(LineReceiver):
        delimiter = b"\n"
        expected_count = 0

        def say(self, tag, obj=None):
            line = tag if obj is None else f"{tag} {json.dumps(obj)}"
            self.transport.write(line.encode() + b"\n")

        @defer.inlineCallbacks
        def start(self):
            t0 = time.perf_counter()
            sem = defer.DeferredSemaphore(CONNECTS_IN_FLIGHT)
            try:
                yield defer.gatherResults(
                    [sem.run(connect_one) for _ in range(args.holders)], consumeErrors=True)
            except Exception as exc:
                self.say("ERR", f"connecting holders: {short_error(exc)}")
                reactor.stop()
                return
            tracker.on_done = lambda: self.say("DONE", tracker.report(self.expected_count))
            self.say("READY", {"holders": len(tracker.caches),
                               "setup_s": time.perf_counter() - t0, "nodelay": nodelay,
                               "rss_kb": current_rss_kb()})

        def lineReceived(self, line):
            msg = json.loads(line)
            if msg["cmd"] == "expect":
                self.expected_count += msg["updates"]
                tracker.arm(msg["target"], msg.get("profile", 0))
                self.say("ARMED")
            elif msg["cmd"] == "status":
                self.say("STATUS", tracker.report(self.expected_count))
            elif msg["cmd"] == "quit":
                info = {"peak_rss_kb": peak_rss_kb()}
                for f in factories:
                    f.disconnect()
                self.say("BYE", info)
                self.transport.loseConnection()  # flushes, then connectionLost stops

        def connectionLost(self, reason=None):
            if reactor.running:
                reactor.stop()

    commands = Commands()
    stdio.StandardIO(commands)
    reactor.callWhenRunning(commands.start)
    reactor.run(installSignalHandlers=False)


# --------------------------------------------------------------------------
# Orchestrator.
# --------------------------------------------------------------------------


def answer(child, tags, timeout):
    """Wait for a stdout line starting with one of tags; return (tag, decoded rest)."""
    tag, rest = read_tagged(child, tags, timeout)
    return tag, (json.loads(rest) if rest else None)


def command(child, msg):
    """Send one JSON command line to a child."""
    child.send(json.dumps(msg) + "\n")


class Failed(Exception):
    """The system could not finish; the message says where."""


def check_round(done, n_holders):
    problems = []
    if done["holders"] != n_holders:
        problems.append(f"{done['holders']} holders instead of {n_holders}")
    if done["wrong_count"]:
        problems.append(f"{done['wrong_count']} holders saw a wrong number of updates "
                        f"(min {done['min_count']}, max {done['max_count']}, "
                        f"expected {done['expected_count']})")
    if done["wrong_last"]:
        problems.append(f"{done['wrong_last']} holders did not end on the last value")
    if done["out_of_order"]:
        problems.append(f"{done['out_of_order']} holders saw updates out of order, e.g. "
                        + "; ".join(done["out_of_order_examples"]))
    return problems


def run_system(args, system):
    """Owner + holders for one system; returns its result dict (never raises)."""
    res = {"system": system}
    children = []
    t_start = time.monotonic()
    try:
        common = ["--system", system, "--host", args.host, "--holders", str(args.holders),
                  "--alarm", str(int(args.setup_timeout + args.deadline * args.rounds + 120))]
        this = [sys.executable, os.path.abspath(__file__)]
        owner = Child([*this, "--role", "owner", *common], stderr=None, cwd=ROOT,
                      label=f"{system} owner")
        children.append(owner)
        _tag, port = answer(owner, ("PORT",), timeout=20)
        holders = Child([*this, "--role", "holders", "--port", str(port), *common],
                        stderr=None, cwd=ROOT, label=f"{system} holders")
        children.append(holders)
        tag, ready = answer(holders, ("READY", "ERR"), timeout=args.setup_timeout)
        if tag == "ERR":
            raise Failed(f"holders could not connect: {ready}")
        res["setup_s"] = ready["setup_s"]
        res["holder_nodelay"] = ready["nodelay"]
        res["holders_rss_before_kb"] = ready["rss_kb"]
        command(owner, {"cmd": "observers"})
        _tag, obs = answer(owner, ("OK",), timeout=30)
        res["rss_before_kb"] = obs["rss_kb"]
        if obs["observers"] != args.holders or ready["holders"] != args.holders:
            raise Failed(f"{ready['holders']} holders connected, owner has "
                         f"{obs['observers']} observers; expected {args.holders}")
        rounds = res["rounds"] = []
        for r in range(args.rounds):
            base = r * args.updates
            target = base + args.updates - 1
            profile = args.profile_top if (args.profile and r == 0) else 0
            command(holders, {"cmd": "expect", "target": target, "updates": args.updates,
                              "profile": profile})
            answer(holders, ("ARMED",), timeout=30)
            sent = time.monotonic()
            deadline = sent + args.deadline
            command(owner, {"cmd": "run", "base": base, "updates": args.updates,
                            "profile": profile})
            try:
                _tag, timing = answer(owner, ("TIME",), timeout=args.deadline)
            except TimeoutError:
                raise Failed(f"round {r + 1}: the setter loop did not return within "
                             f"{args.deadline:.0f}s") from None
            if timing["observers"] != args.holders:
                raise Failed(f"owner had {timing['observers']} observers at the setter loop")
            if "profile" in timing:
                res["profiles"] = {"setter": timing.pop("profile")}
            rounds.append(timing)  # the setter's numbers stand even if delivery fails
            try:
                _tag, done = answer(holders, ("DONE",),
                                    timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                command(holders, {"cmd": "status"})
                try:
                    _tag, st = answer(holders, ("STATUS",), timeout=5)
                    how_far = (f"{st['holders_with_last']}/{st['holders']} holders had the last "
                               f"update; {st['updates_seen']:,} of "
                               f"{st['holders'] * st['expected_count']:,} updates delivered")
                except (TimeoutError, RuntimeError):
                    how_far = "the holder process did not answer a status request either"
                raise Failed(f"round {r + 1}: not delivered within {args.deadline:.0f}s "
                             f"(setter loop took {timing['setter_s']:.2f}s); {how_far}") from None
            problems = check_round(done, args.holders)
            if problems:
                raise Failed(f"round {r + 1}: " + "; ".join(problems))
            timing["delivery_s"] = done["t_last"] - timing["t_first"]
            timing["first_holder_s"] = done["t_first_holder_done"] - timing["t_first"]
            timing["after_setter_s"] = timing["delivery_s"] - timing["setter_s"]
            timing["first_seen_s"] = done["t_first_seen"] - timing["t_first"]
            timing["holders_peak_rss_kb"] = done["peak_rss_kb"]
            timing["holders_cpu_s"] = done["cpu_round_s"]
            timing["holders_gc_s"] = done["gc_round_s"]
            timing["holders_gc_n"] = done["gc_round_collections"]
            if done.get("profile"):
                res.setdefault("profiles", {})["holders"] = done["profile"]
        command(owner, {"cmd": "stop"})
        _tag, stats = answer(owner, ("STATS",), timeout=30)
        res["owner_peak_rss_kb"] = stats["peak_rss_kb"]
        res["owner_cpu_s"] = stats["cpu_s"]
        if stats.get("drain_profile"):
            res.setdefault("profiles", {})["drain"] = stats["drain_profile"]
        res["owner_nodelay"] = (sum(stats["nodelay"]), stats["connections"],
                                sum(stats["nodelay_preset"]))
        command(holders, {"cmd": "quit"})
        try:
            _tag, bye = answer(holders, ("BYE",), timeout=30)
            res["holders_peak_rss_kb"] = bye["peak_rss_kb"]
        except (TimeoutError, RuntimeError):
            pass
    except Failed as exc:
        res["error"] = str(exc)
    except (TimeoutError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        res["error"] = short_error(exc)
    finally:
        for child in reversed(children):
            child.stop(grace=3, timeout=2)
    res["wall_s"] = time.monotonic() - t_start
    return res


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


#: Issue 11's targets, as (title, pbgreen's ratio to Twisted, bound, met when below?).
TARGETS = (("setter loop, pbgreen / Twisted", 0.05, True),
           ("first update -> all delivered, Twisted / pbgreen", 8.0, False),
           ("holder process peak RSS, pbgreen / Twisted", 1.0, True))


def print_targets(setter_p, setter_t, deliver_p, deliver_t, rss_p, rss_t):
    """The three ratios issue 11 sets targets for, and whether this run met them."""
    ratios = (setter_p / setter_t if setter_p and setter_t else None,
              deliver_t / deliver_p if deliver_p and deliver_t else None,
              rss_p / rss_t if rss_p and rss_t else None)
    print("\nTargets (issue 11):")
    for (title, bound, below), ratio in zip(TARGETS, ratios):
        if ratio is None:
            print(f"  {title:<52} -      (target {'<=' if below else '>='} {bound:g}x)")
            continue
        met = ratio <= bound if below else ratio >= bound
        print(f"  {title:<52} {ratio:6.3f}x (target {'<=' if below else '>='} {bound:g}x: "
              f"{'met' if met else 'NOT met'})")


def report(args, results):
    n, u = args.holders, args.updates
    msgs = n * u

    def val(system, key):
        res = results.get(system)
        got = [r[key] for r in (res or {}).get("rounds", ()) if r.get(key) is not None]
        return median(got) if got else None

    def top(system, key):
        res = results.get(system)
        return None if not res or "error" in res else res.get(key)

    def cell(v, fmt):
        return "-" if v is None else fmt(v)

    def secs(v):
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"

    def us(v):
        return f"{v * 1e6:,.1f} µs" if v < 0.01 else f"{v * 1e3:,.1f} ms"

    def mb(kb):
        return f"{kb / 1024:,.1f} MB"

    rows = []

    def row(title, a, b, fmt, ratio=True):
        ratio_s = f"{b / a:.2f}x" if ratio and a and b else ""
        rows.append([title, cell(a, fmt), cell(b, fmt), ratio_s])

    sp, st = val("pbgreen", "setter_s"), val("twisted", "setter_s")
    row(f"setter loop, {u:,} set() calls", sp, st, secs)
    row(f"  per set() (notifies {n:,})", sp and sp / u, st and st / u, us)
    row("  per observer.callRemote", sp and sp / msgs, st and st / msgs, us)
    wp, wt = val("pbgreen", "worst_set_s"), val("twisted", "worst_set_s")
    row("  slowest single set()", wp, wt, us)
    dp, dt = val("pbgreen", "delivery_s"), val("twisted", "delivery_s")
    row("first update -> all holders have the last", dp, dt, secs)
    row("  per update (delivery / U)", dp and dp / u, dt and dt / u, us)
    row(f"  per message (delivery / {msgs:,})", dp and dp / msgs, dt and dt / msgs, us)
    row("  of which after the setter loop returned",
        val("pbgreen", "after_setter_s"), val("twisted", "after_setter_s"), secs)
    row("first update -> a holder sees an update",
        val("pbgreen", "first_seen_s"), val("twisted", "first_seen_s"), secs)
    fp, ft = val("pbgreen", "first_holder_s"), val("twisted", "first_holder_s")
    row("first update -> first holder has the last", fp, ft, secs)
    rows.append(["updates delivered per second",
                 cell(dp and msgs / dp, lambda v: f"{v:,.0f}/s"),
                 cell(dt and msgs / dt, lambda v: f"{v:,.0f}/s"),
                 f"{(msgs / dp) / (msgs / dt):.2f}x" if dp and dt else ""])
    row("owner RSS, holders connected, before updates",
        top("pbgreen", "rss_before_kb"), top("twisted", "rss_before_kb"), mb)
    row("owner peak RSS (ru_maxrss)",
        top("pbgreen", "owner_peak_rss_kb"), top("twisted", "owner_peak_rss_kb"), mb)
    row("owner CPU, whole process life",
        top("pbgreen", "owner_cpu_s"), top("twisted", "owner_cpu_s"), secs)
    row("holder process CPU, arming -> last update",
        val("pbgreen", "holders_cpu_s"), val("twisted", "holders_cpu_s"), secs)
    row("  of which in the cyclic GC (wall)",
        val("pbgreen", "holders_gc_s"), val("twisted", "holders_gc_s"), secs)
    row("holder process RSS, holders connected, before updates",
        top("pbgreen", "holders_rss_before_kb"), top("twisted", "holders_rss_before_kb"), mb)
    row("holder process peak RSS",
        top("pbgreen", "holders_peak_rss_kb"), top("twisted", "holders_peak_rss_kb"), mb)
    row(f"setup: {n:,} holders connect + getCounter",
        top("pbgreen", "setup_s"), top("twisted", "setup_s"), secs)

    def header(system):
        res = results.get(system)
        if res is None:
            return f"{SYSTEM_TITLES[system]} (not run)"
        if "error" in res:
            return f"{SYSTEM_TITLES[system]}: ERROR"
        return SYSTEM_TITLES[system]

    print(f"\nCacheable fan-out: {n:,} holders x {u:,} updates = {msgs:,} observe_set "
          f"messages per round; median of {args.rounds} round(s)"
          + ("  [profiled run: timings inflated]" if args.profile else ""))
    print(render_table(["", header("pbgreen"), header("twisted"), "Twisted/pbgreen"], rows))
    print("Twisted/pbgreen: Twisted's number divided by pbgreen's (above 1.00x: pbgreen "
          "is faster or smaller; the delivered-per-second row is pbgreen/Twisted)")
    print_targets(sp, st, dp, dt, top("pbgreen", "holders_peak_rss_kb"),
                  top("twisted", "holders_peak_rss_kb"))

    for system in SYSTEMS:
        res = results.get(system)
        if not res:
            continue
        title = SYSTEM_TITLES[system]
        extra = ""
        if any(r.get("setter_yielded") for r in res.get("rounds", ())):
            extra = ("\n  ** the setter loop gave up the CPU: another greenlet ran while it "
                     "was running, so a set() blocked **")
        if "error" in res:
            print(f"\n{title} ERROR: {res['error']}{extra}")
            continue
        on, conns, preset = res["owner_nodelay"]
        hn = res["holder_nodelay"]
        print(f"\n{title}: every holder saw all {u:,} updates of each round, in order; "
              f"owner TCP_NODELAY on {on}/{conns} accepted sockets (already on: {preset}); "
              f"holders {hn['after']}/{hn['checked']} (already on: {hn['preset']}); "
              f"wall time for this system {res['wall_s']:.1f}s{extra}")
        if len(res["rounds"]) > 1:
            print("  rounds: " + ", ".join(
                f"setter {r['setter_s']:.3f}s / delivery {r['delivery_s']:.3f}s"
                for r in res["rounds"]))
    what = {"setter": "owner, the setter loop of round 1",
            "drain": "owner, after the setter loop until stopped (writing the updates, "
                     "reading the holders' answers)",
            "holders": "holder process, round 1 from arming until every holder has the "
                       "last update"}
    for system in SYSTEMS:
        profiles = (results.get(system) or {}).get("profiles") or {}
        for key, title in what.items():
            if key in profiles:
                print(f"\n===== cProfile {SYSTEM_TITLES[system]}, {title}: top "
                      f"{args.profile_top} by own time (wall time) =====")
                print(profiles[key].strip())


def orchestrate(args):
    load_before = os.getloadavg()[0]
    print(f"Cacheable fan-out benchmark: {args.holders:,} holders on {args.holders:,} "
          f"connections in one process, {args.updates:,} updates, {args.rounds} round(s); "
          f"systems: {', '.join(SYSTEM_TITLES[s] for s in args.systems)}; deadline "
          f"{args.deadline:.0f}s per round", flush=True)
    if load_before > 0.5:
        print(f"note: 1-minute load average is {load_before:.2f} before starting; other "
              "work on this machine will skew the numbers", flush=True)
    started = time.monotonic()
    results = {}
    for system in args.systems:
        print(f"  {SYSTEM_TITLES[system]} ...", end="", flush=True)
        results[system] = run_system(args, system)
        status = "ERROR" if "error" in results[system] else "ok"
        print(f" {status}, {results[system]['wall_s']:.1f}s", flush=True)
    report(args, results)
    print(f"\ntotal wall time {time.monotonic() - started:.1f}s; 1-minute load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"holders": args.holders, "updates": args.updates,
                       "rounds": args.rounds, "results": results}, f, indent=2)
        print(f"results written to {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


# --------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--holders", type=int, default=None, help="N, holders (default 500)")
    p.add_argument("--updates", type=int, default=None, help="U, updates (default 1000)")
    p.add_argument("--quick", action="store_true", help="N=100, U=200 unless given")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds of U updates on the same connections; the median is shown")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of: pbgreen,twisted")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds one round may take (setter + delivery) before the system "
                        "is reported as not finishing (default 60, 20 with --quick)")
    p.add_argument("--setup-timeout", type=float, default=30.0,
                   help="seconds for the N holders to connect and get their cache")
    p.add_argument("--profile", action="store_true",
                   help="run the owner's setter loop of round 1 under cProfile and print "
                        "the top functions by own time")
    p.add_argument("--profile-top", type=int, default=10)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--role", default="orchestrate", choices=["orchestrate", "owner", "holders"],
                   help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--alarm", type=int, default=600, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.holders is None:
        args.holders = 100 if args.quick else 500
    if args.updates is None:
        args.updates = 200 if args.quick else 1000
    if args.deadline is None:
        args.deadline = 20.0 if args.quick else 60.0
    if args.holders < 1 or args.updates < 1 or args.rounds < 1:
        p.error("--holders, --updates and --rounds must be at least 1")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {bad}; choose from {SYSTEMS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.role == "orchestrate":
        # SIGTERM becomes SystemExit, so the finally blocks kill the children.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return orchestrate(args)
    # A child never outlives a stuck run: the default SIGALRM action exits.
    signal.alarm(args.alarm)
    role = {("owner", "pbgreen"): owner_pbgreen, ("owner", "twisted"): owner_twisted,
            ("holders", "pbgreen"): holders_pbgreen, ("holders", "twisted"): holders_twisted}
    role[(args.role, args.system)](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
