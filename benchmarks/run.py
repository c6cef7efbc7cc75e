"""Round-trip benchmark: pbgreen vs Twisted PB, RPyC, Pyro5, and raw gevent echoes.

How it works: this one file plays three roles, picked by ``--role``.

* ``orchestrate`` (the default) starts, for every system, a server process
  and a client process, both running this file again.  A server binds
  127.0.0.1 port 0 and prints ``PORT <n>``; its client gets the port on the
  command line, connects, prints ``READY`` and then obeys one-line JSON
  commands on stdin: ``check`` (one echo, compared with what was sent),
  ``run`` (time N iterations of a workload, answer ``TIME <seconds>``) and
  ``quit``.  At the end the orchestrator writes ``stop`` to every server,
  which prints ``STATS <json>`` (peak RSS, TCP_NODELAY seen on accepted
  sockets) and exits.
* ``server`` / ``client`` do the actual work for one system.

Only one client works at a time; the idle processes sit in a blocking read,
so on a two-core machine the active client and server have a core each.
Repeats are interleaved across the systems (pbgreen, Twisted, raw, then
the next repeat in a rotated order), so a change in background load hits
every column alike instead of skewing the ratios.

Each workload is measured the same way for every system: one checked echo;
a warm-up of 1, 2, 4, ... iterations until ``warmup`` seconds have gone by;
N chosen from the last warm-up batch so that one repeat takes about
``target`` seconds; then ``repeats`` timed runs of N iterations
(``time.perf_counter`` inside the client).  The median time per call is
reported.

Every child is killed in a ``finally`` if anything goes wrong, and a child
whose orchestrator vanished exits on its own (stdin EOF, with
``signal.alarm`` as a last resort).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import signal
import socket
import statistics
import struct
import sys
import time

from pbgreen.testing.processes import Child

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SYSTEMS = ("pbgreen", "twisted", "raw", "rawpickle", "rpyc", "pyro5")
SYSTEM_TITLES = {"pbgreen": "pbgreen", "twisted": "Twisted PB", "raw": "raw gevent",
                 "rawpickle": "raw pickle", "rpyc": "RPyC", "pyro5": "Pyro5"}
#: The module each system needs beyond pbgreen's own dependencies: a system
#: whose module is missing is reported as not installed, the rest still run.
SYSTEM_NEEDS = {"twisted": "twisted", "rpyc": "rpyc", "pyro5": "Pyro5"}
#: Workloads whose payload is structured data: also compared with raw pickle.
STRUCTURED = ("b",)

BATCH = 100  # calls in flight for workload (d)
BIG_SIZE = 600 * 1024  # under banana's 640 KiB per-string limit


# --------------------------------------------------------------------------
# Workloads: the logical payload, and the bytes the raw echo sends for it.
# --------------------------------------------------------------------------


def payload_small():
    return "hello network"


def payload_dicts():
    return [
        {"id": i, "name": f"item{i}", "price": i * 1.5, "tags": ["a", "b"]}
        for i in range(100)
    ]


def payload_big():
    pattern = bytes(range(256))
    return (pattern * (BIG_SIZE // 256 + 1))[:BIG_SIZE]


# name -> (title, payload factory, raw encoder, calls per iteration,
#          min N, max N)
WORKLOADS = {
    "a": ("(a) small str, sequential", payload_small,
          lambda p: p.encode("utf-8"), 1, 20, 200_000),
    "b": ("(b) 100 dicts, sequential", payload_dicts,
          lambda p: repr(p).encode("utf-8"), 1, 10, 50_000),
    "c": ("(c) 600 KB bytes, sequential", payload_big,
          lambda p: p, 1, 3, 20_000),
    "d": (f"(d) {BATCH} in flight, small str", payload_small,
          lambda p: p.encode("utf-8"), BATCH, 3, 20_000),
}
# Extra pbgreen-only measurement: workload (d) with one greenlet per call
# instead of callRemoteAsync.  Reported as a footnote, not a table row.
EXTRA_D_GREENLETS = "d_greenlets"

RAW_DESCRIPTION = {
    "a": "the UTF-8 bytes of 'hello network'",
    "b": "repr(list_of_dicts).encode() (pre-encoded once, not parsed back)",
    "c": "the 600 KiB bytes value itself",
    "d": f"{BATCH} frames of 'hello network' written with one sendall, "
         f"then {BATCH} replies read",
}

MODES = {
    # warm-up seconds, target seconds per repeat, repeats
    "quick": dict(warmup=0.08, target=0.2, repeats=3),
    "full": dict(warmup=0.4, target=1.2, repeats=5),
}


def calibrate(run, warmup, target, min_n, max_n):
    """Warm up with 1, 2, 4, ... iterations; return N for a ``target``-second run.

    ``run(n)`` times n iterations and returns the elapsed seconds.
    """
    n = 1
    spent = 0.0
    while True:
        elapsed = run(n)
        spent += elapsed
        if spent >= warmup:
            break
        n *= 2
    per_iter = max(elapsed / n, 1e-9)
    return int(min(max_n, max(min_n, math.ceil(target / per_iter))))


def summarize(n, per_iter_s, calls_per_iter):
    per_call_us = [t / calls_per_iter * 1e6 for t in per_iter_s]
    med = statistics.median(per_call_us)
    return {
        "us_per_call": med,
        "calls_per_s": 1e6 / med if med > 0 else None,
        "repeats_us": per_call_us,
        "n_iterations": n,
        "calls_per_iteration": calls_per_iter,
    }


# --------------------------------------------------------------------------
# Small helpers shared by the children.
# --------------------------------------------------------------------------


def current_rss_kb():
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_kb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def ensure_nodelay(sock):
    """Set TCP_NODELAY on sock; return (value before, value after)."""
    before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    if not before:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    after = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    return bool(before), bool(after)


def connected_nodelay():
    """TCP_NODELAY of each connected TCP socket this process has open, by socket inode.

    pbgreen sets TCP_NODELAY itself; the benchmark only looks, through
    /proc/self/fd and a duplicate of each descriptor, so it needs nothing
    from pbgreen's internals and changes nothing.
    """
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not target.startswith("socket:"):
                continue
            dup = os.dup(int(fd))
        except OSError:  # closed meanwhile (the fd of the listing itself, too)
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET,
                                                                   socket.AF_INET6):
                sock.getpeername()  # a listening socket has no peer: OSError
                found[target] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        except OSError:
            pass
        finally:
            sock.close()
    return found


def emit(tag, obj=None):
    line = tag if obj is None else f"{tag} {json.dumps(obj)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def start_profiler(args):
    if not args.profile_out:
        return None
    import cProfile
    # CPU time, not wall time: waiting for the peer (in recv, or in a send
    # that wakes the peer on a busy machine) would otherwise top the list.
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    return prof


def stop_profiler(prof, args):
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.profile_out)


# --------------------------------------------------------------------------
# Servers.
# --------------------------------------------------------------------------


def gevent_wait_for_stop():
    """Block the main greenlet until stdin says stop (or closes)."""
    for line in gevent_lines():
        if line.strip() == "stop":
            return


def server_raw(args):
    """The raw gevent echo; as ``rawpickle`` it unpickles each frame and pickles it back."""
    import pickle

    from gevent.pool import Pool
    from gevent.server import StreamServer

    stats = {"connections": 0, "nodelay_preset": [], "nodelay": []}
    rebuild = args.system == "rawpickle"
    dumps, loads = pickle.dumps, pickle.loads
    pack = struct.Struct("!I").pack

    def handle(sock, _addr):
        before, after = ensure_nodelay(sock)
        stats["connections"] += 1
        stats["nodelay_preset"].append(before)
        stats["nodelay"].append(after)
        rfile = sock.makefile("rb", buffering=65536)
        unpack = struct.Struct("!I").unpack
        try:
            while True:
                header = rfile.read(4)
                if len(header) < 4:
                    return
                (size,) = unpack(header)
                body = rfile.read(size)
                if len(body) < size:
                    return
                if rebuild:
                    body = dumps(loads(body), pickle.HIGHEST_PROTOCOL)
                    header = pack(len(body))
                sock.sendall(header + body)
        except OSError:
            return
        finally:
            rfile.close()

    server = StreamServer((args.host, 0), handle, spawn=Pool(64))
    server.start()
    stats["rss_after_start_kb"] = current_rss_kb()
    emit(f"PORT {server.address[1]}")
    prof = start_profiler(args)
    gevent_wait_for_stop()
    stop_profiler(prof, args)
    server.stop(timeout=2)
    stats["peak_rss_kb"] = peak_rss_kb()
    emit("STATS", stats)


def server_pbgreen(args):
    import pbgreen as pb

    stats = {"connections": 0, "nodelay_preset": [], "nodelay": [],
             "nodelay_how": None}

    class Root(pb.Root):
        def remote_echo(self, x):
            return x

    server = pb.PBServer(Root(), port=0, host=args.host)
    server.start()
    watcher = watch_nodelay(stats)
    stats["rss_after_start_kb"] = current_rss_kb()
    emit(f"PORT {server.address[1]}")
    prof = start_profiler(args)
    gevent_wait_for_stop()
    stop_profiler(prof, args)
    watcher.kill()
    try:
        server.stop(timeout=2)
    except Exception as exc:  # report, still print stats
        stats["stop_error"] = repr(exc)
    stats["peak_rss_kb"] = peak_rss_kb()
    emit("STATS", stats)


def watch_nodelay(stats, interval=0.5):
    """Record TCP_NODELAY of each connection pbgreen's server accepts; a greenlet.

    Every ``interval`` seconds it looks at the process's connected sockets
    (``connected_nodelay``) and counts the new ones. It reads the option
    pbgreen set and never sets it.
    """
    import gevent

    stats["nodelay_how"] = (f"read every {interval:g} s from each connected socket of the "
                            "server process (/proc/self/fd); never set by the benchmark")
    seen = set()

    def watch():
        while True:
            note_new_sockets(stats, seen)
            gevent.sleep(interval)

    return gevent.spawn(watch)


def note_new_sockets(stats, seen):
    """Count the connected sockets not ``seen`` before, with their TCP_NODELAY."""
    for inode, on in connected_nodelay().items():
        if inode not in seen:
            seen.add(inode)
            stats["connections"] += 1
            stats["nodelay_preset"].append(on)
            stats["nodelay"].append(on)


def server_twisted(args):
    from twisted.internet import reactor, stdio
    from twisted.internet.protocol import Protocol
    from twisted.spread import pb

    stats = {"connections": 0, "nodelay_preset": [], "nodelay": []}

    class NoDelayBroker(pb.Broker):
        def connectionMade(self):
            before = bool(self.transport.getTcpNoDelay())
            self.transport.setTcpNoDelay(True)
            stats["connections"] += 1
            stats["nodelay_preset"].append(before)
            stats["nodelay"].append(bool(self.transport.getTcpNoDelay()))
            super().connectionMade()

    class Root(pb.Root):
        def remote_echo(self, x):
            return x

    class Control(Protocol):
        buf = b""

        def dataReceived(self, data):
            self.buf += data
            if b"stop" in self.buf and reactor.running:
                reactor.stop()

        def connectionLost(self, reason=None):
            if reactor.running:
                reactor.stop()

    factory = pb.PBServerFactory(Root())
    factory.protocol = NoDelayBroker
    port = reactor.listenTCP(0, factory, interface=args.host)
    stats["rss_after_start_kb"] = current_rss_kb()
    emit(f"PORT {port.getHost().port}")
    stdio.StandardIO(Control())
    prof = start_profiler(args)
    reactor.run(installSignalHandlers=False)
    stop_profiler(prof, args)
    stats["peak_rss_kb"] = peak_rss_kb()
    emit("STATS", stats)


def wait_for_stop_line():
    """Block this (plain, threaded) process until stdin says stop or closes."""
    for line in sys.stdin:
        if line.strip() == "stop":
            return


def server_rpyc(args):
    """RPyC's ThreadedServer with a service whose ``exposed_echo`` returns its argument.

    RPyC passes lists and dicts *by reference* (a netref to the caller's
    object). Returning that netref would send nothing back but an id, so
    the echo first takes a real local copy (``rpyc.classic.obtain``: the
    client pickles its object) and returns that; the client obtains the
    answer in turn. Strings and bytes travel by value and come back as they are.
    """
    import threading

    import rpyc
    from rpyc.core.netref import BaseNetref
    from rpyc.utils.classic import obtain
    from rpyc.utils.server import ThreadedServer

    stats = {"connections": 0, "nodelay_preset": [], "nodelay": []}

    class EchoService(rpyc.Service):
        def exposed_echo(self, x):
            return obtain(x) if isinstance(x, BaseNetref) else x

    class NoDelayServer(ThreadedServer):
        def _accept_method(self, sock):
            before, after = ensure_nodelay(sock)
            stats["connections"] += 1
            stats["nodelay_preset"].append(before)
            stats["nodelay"].append(after)
            super()._accept_method(sock)

    server = NoDelayServer(EchoService, hostname=args.host, port=0,
                           protocol_config={"allow_pickle": True})
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    stats["rss_after_start_kb"] = current_rss_kb()
    emit(f"PORT {server.port}")
    wait_for_stop_line()
    server.close()
    stats["peak_rss_kb"] = peak_rss_kb()
    emit("STATS", stats)


def server_pyro5(args):
    """A Pyro5 daemon (default thread-pool server) exposing ``echo``; serializer serpent."""
    import threading

    import Pyro5.api

    Pyro5.api.config.SOCK_NODELAY = True  # Pyro5's switch; accepted sockets inherit it
    Pyro5.api.config.SERIALIZER = "serpent"  # Pyro5's default, named so nobody wonders
    stats = {"connections": 0, "nodelay_preset": [], "nodelay": [], "nodelay_how": None}

    @Pyro5.api.expose
    class Echo:
        def echo(self, x):
            return x

    daemon = Pyro5.api.Daemon(host=args.host, port=0)
    daemon.register(Echo, "echo")
    running = threading.Event()
    running.set()
    thread = threading.Thread(target=daemon.requestLoop, args=(running.is_set,), daemon=True)
    thread.start()
    watcher_stop = watch_nodelay_threaded(stats)
    stats["rss_after_start_kb"] = current_rss_kb()
    emit(f"PORT {daemon.locationStr.rsplit(':', 1)[1]}")
    wait_for_stop_line()
    watcher_stop.set()
    running.clear()
    daemon.shutdown()
    stats["peak_rss_kb"] = peak_rss_kb()
    emit("STATS", stats)


def watch_nodelay_threaded(stats, interval=0.5):
    """``watch_nodelay`` for a server without gevent: a thread; returns the Event that stops it."""
    import threading

    stop = threading.Event()
    stats["nodelay_how"] = (f"read every {interval:g} s from each connected socket of the "
                            "server process (/proc/self/fd); set by Pyro5 (SOCK_NODELAY)")
    seen = set()

    def watch():
        while not stop.is_set():
            note_new_sockets(stats, seen)
            stop.wait(interval)

    threading.Thread(target=watch, daemon=True).start()
    return stop


# --------------------------------------------------------------------------
# Clients.
# --------------------------------------------------------------------------


def workload_spec(name):
    """(title, payload factory, raw encoder, calls per iteration, min N, max N)."""
    return WORKLOADS["d" if name == EXTRA_D_GREENLETS else name]


def gevent_lines():
    """Yield stdin lines without blocking the gevent hub; stop at EOF."""
    import gevent.os
    gevent.os.make_nonblocking(0)
    buf = b""
    while True:
        try:
            chunk = gevent.os.nb_read(0, 4096)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


def short_error(exc):
    return f"{type(exc).__name__}: {exc}"[:300]


def run_blocking_client(args, connect, make_runner, close, nodelay_info):
    """Command loop shared by the two gevent clients (pbgreen and raw)."""
    import gevent

    conn = connect()
    emit("READY")
    info = {"nodelay": nodelay_info(conn)}
    runners = {}
    prof = start_profiler(args)
    for line in gevent_lines():
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        name = msg["w"]
        if conn is None:
            try:
                conn = connect()
            except Exception as exc:
                emit("ERR", f"cannot reconnect: {short_error(exc)}")
                continue
        try:
            with gevent.Timeout(args.workload_timeout):
                if name not in runners:
                    spec = workload_spec(name)
                    runners[name] = make_runner(conn, name, spec[1](), spec[2])
                runner, check = runners[name]
                if msg["cmd"] == "check":
                    check()
                    emit("OK")
                else:
                    gc.collect()
                    emit("TIME", runner(msg["n"]))
        except BaseException as exc:  # noqa: BLE001 - gevent.Timeout too
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            emit("ERR", short_error(exc))
            runners.clear()
            try:
                close(conn)
            except Exception:
                pass
            conn = None  # reconnect: a failed workload must not poison the next
    stop_profiler(prof, args)
    if conn is not None:
        close(conn)
    info["peak_rss_kb"] = peak_rss_kb()
    emit("BYE", info)


def client_pbgreen(args):
    import gevent
    import pbgreen as pb

    perf = time.perf_counter

    def connect():
        client = pb.PBClient(args.host, args.port)
        root = client.getRootObject()
        seen = list(connected_nodelay().values())  # this client's one connection
        on = bool(seen) and all(seen)
        return {"client": client, "root": root,
                "nodelay": {"preset_by_pbgreen": on, "after": on} if seen else None}

    def close(conn):
        conn["client"].close()

    def make_runner(conn, name, payload, _raw_enc):
        root = conn["root"]
        call = root.callRemote

        if name in ("a", "b", "c"):
            def runner(n):
                t0 = perf()
                for _ in range(n):
                    call("echo", payload)
                return perf() - t0

            def check():
                if call("echo", payload) != payload:
                    raise AssertionError("echo returned a different value")
        elif name == "d":
            call_async = root.callRemoteAsync

            def runner(n):
                t0 = perf()
                for _ in range(n):
                    pending = [call_async("echo", payload) for _ in range(BATCH)]
                    for r in pending:
                        r.get()
                return perf() - t0

            def check():
                pending = [call_async("echo", payload) for _ in range(BATCH)]
                if any(r.get() != payload for r in pending):
                    raise AssertionError("echo returned a different value")
        else:  # EXTRA_D_GREENLETS
            spawn, joinall = gevent.spawn, gevent.joinall

            def runner(n):
                t0 = perf()
                for _ in range(n):
                    gs = [spawn(call, "echo", payload) for _ in range(BATCH)]
                    joinall(gs, raise_error=True)
                return perf() - t0

            def check():
                gs = [spawn(call, "echo", payload) for _ in range(BATCH)]
                joinall(gs, raise_error=True)
                if any(g.value != payload for g in gs):
                    raise AssertionError("echo returned a different value")
        return runner, check

    return run_blocking_client(args, connect, make_runner, close,
                               lambda conn: conn["nodelay"])


def client_raw(args):
    """The raw gevent echo client; as ``rawpickle`` it pickles and unpickles every message."""
    import pickle

    from gevent import socket as gsocket

    perf = time.perf_counter
    rebuild = args.system == "rawpickle"
    dumps, loads, proto = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
    pack = struct.Struct("!I").pack
    unpack = struct.Struct("!I").unpack

    def connect():
        sock = gsocket.create_connection((args.host, args.port))
        before, after = ensure_nodelay(sock)
        rfile = sock.makefile("rb", buffering=65536)
        return {"sock": sock, "rfile": rfile,
                "nodelay": {"preset": before, "after": after}}

    def close(conn):
        conn["rfile"].close()
        conn["sock"].close()

    def make_runner(conn, name, payload, raw_enc):
        sock, rfile = conn["sock"], conn["rfile"]
        sendall, read = sock.sendall, rfile.read
        data = raw_enc(payload)
        frame = pack(len(data)) + data

        def recv_frame():
            header = read(4)
            if len(header) < 4:
                raise EOFError("server closed the connection")
            (size,) = unpack(header)
            body = read(size)
            if len(body) < size:
                raise EOFError("server closed the connection")
            return body

        if rebuild:  # every message serialized and parsed on both sides, each time
            def one(n_frames):
                out = b""
                for _ in range(n_frames):
                    body = dumps(payload, proto)
                    out += pack(len(body)) + body
                sendall(out)
                return [loads(recv_frame()) for _ in range(n_frames)]

            frames_per_call = BATCH if name == "d" else 1
            return echo_runner(lambda: one(frames_per_call), payload)
        if name != "d":
            def runner(n):
                t0 = perf()
                for _ in range(n):
                    sendall(frame)
                    recv_frame()
                return perf() - t0

            def check():
                sendall(frame)
                if recv_frame() != data:
                    raise AssertionError("echo returned different bytes")
        else:
            frames = frame * BATCH

            def runner(n):
                t0 = perf()
                for _ in range(n):
                    sendall(frames)
                    for _ in range(BATCH):
                        recv_frame()
                return perf() - t0

            def check():
                sendall(frames)
                if any(recv_frame() != data for _ in range(BATCH)):
                    raise AssertionError("echo returned different bytes")
        return runner, check

    return run_blocking_client(args, connect, make_runner, close,
                               lambda conn: conn["nodelay"])


def echo_runner(iteration, payload):
    """``(runner, check)`` for a client whose ``iteration()`` returns the answers it got."""
    perf = time.perf_counter

    def runner(n):
        t0 = perf()
        for _ in range(n):
            iteration()
        return perf() - t0

    def check():
        if any(value != payload for value in iteration()):
            raise AssertionError("echo returned a different value")
    return runner, check


def client_rpyc(args):
    """RPyC client: ``conn.root.echo(x)``; lists and dicts come back as netrefs and are
    copied with ``rpyc.classic.obtain``, as a user who wants the data would."""
    import rpyc
    from rpyc.core.netref import BaseNetref
    from rpyc.core.stream import SocketStream
    from rpyc.utils.classic import obtain
    from rpyc.utils.factory import connect_stream

    def connect():
        stream = SocketStream.connect(args.host, args.port, nodelay=True)
        conn = connect_stream(stream, config={"allow_pickle": True})
        seen = list(connected_nodelay().values())
        return {"conn": conn, "nodelay": {"set_by_rpyc_option": all(seen), "after": all(seen)}}

    def close(conn):
        conn["conn"].close()

    def make_runner(conn, name, payload, _raw_enc):
        echo = conn["conn"].root.echo

        def call(x):
            value = echo(x)
            return obtain(value) if isinstance(value, BaseNetref) else value

        if name == "d":
            echo_async = rpyc.async_(echo)

            def batch():
                pending = [echo_async(payload) for _ in range(BATCH)]
                return [r.value for r in pending]
            return echo_runner(batch, payload)
        return echo_runner(lambda: [call(payload)], payload)

    return run_blocking_client(args, connect, make_runner, close,
                               lambda conn: conn["nodelay"])


def client_pyro5(args):
    """Pyro5 client: a ``Proxy`` calling ``echo``, serializer serpent (Pyro5's default).

    serpent sends bytes as a base64 dict; the client turns answers back into
    bytes with ``serpent.tobytes``, as Pyro5's documentation tells users to.
    For (d), 100 calls go in one ``BatchProxy`` (Pyro5's way to have many
    calls under way at once on one connection: one message, run in order).
    """
    import Pyro5.api
    import serpent

    Pyro5.api.config.SOCK_NODELAY = True
    Pyro5.api.config.SERIALIZER = "serpent"

    def connect():
        proxy = Pyro5.api.Proxy(f"PYRO:echo@{args.host}:{args.port}")
        proxy._pyroBind()
        seen = list(connected_nodelay().values())
        return {"proxy": proxy, "nodelay": {"set_by_pyro5_option": all(seen),
                                            "after": all(seen)}}

    def close(conn):
        conn["proxy"]._pyroRelease()

    def make_runner(conn, name, payload, _raw_enc):
        proxy = conn["proxy"]
        echo = proxy.echo
        as_bytes = type(payload) is bytes

        def call(x):
            value = echo(x)
            return serpent.tobytes(value) if as_bytes else value

        if name == "d":
            def batch():
                calls = Pyro5.api.BatchProxy(proxy)
                for _ in range(BATCH):
                    calls.echo(payload)
                return list(calls())
            return echo_runner(batch, payload)
        return echo_runner(lambda: [call(payload)], payload)

    return run_blocking_client(args, connect, make_runner, close,
                               lambda conn: conn["nodelay"])


def client_twisted(args):
    from twisted.internet import defer, reactor, stdio
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    perf = time.perf_counter
    nodelay = {}

    class NoDelayBroker(pb.Broker):
        def connectionMade(self):
            before = bool(self.transport.getTcpNoDelay())
            self.transport.setTcpNoDelay(True)
            nodelay["preset"] = before
            nodelay["after"] = bool(self.transport.getTcpNoDelay())
            super().connectionMade()

    def sequential(root, payload):
        """n calls, each issued from the previous one's callback."""
        def runner(n):
            done = defer.Deferred()
            left = [n]
            t0 = perf()

            def step(_result):
                if left[0] == 0:
                    done.callback(perf() - t0)
                    return
                left[0] -= 1
                root.callRemote("echo", payload).addCallbacks(step, done.errback)

            step(None)
            return done
        return runner

    def concurrent(root, payload):
        """n batches of BATCH calls issued at once and gathered."""
        def runner(n):
            done = defer.Deferred()
            left = [n]
            t0 = perf()

            def step(_result):
                if left[0] == 0:
                    done.callback(perf() - t0)
                    return
                left[0] -= 1
                batch = [root.callRemote("echo", payload) for _ in range(BATCH)]
                defer.gatherResults(batch, consumeErrors=True).addCallbacks(
                    step, done.errback)

            step(None)
            return done
        return runner

    @defer.inlineCallbacks
    def connect():
        factory = pb.PBClientFactory()
        factory.protocol = NoDelayBroker
        reactor.connectTCP(args.host, args.port, factory)
        root = yield factory.getRootObject()
        return factory, root

    def make_runner(root, name, payload):
        if name == "d":
            def check():
                batch = [root.callRemote("echo", payload) for _ in range(BATCH)]
                return defer.gatherResults(batch, consumeErrors=True).addCallback(
                    lambda got: all(g == payload for g in got))
            return concurrent(root, payload), check

        def check():
            return root.callRemote("echo", payload).addCallback(lambda got: got == payload)
        return sequential(root, payload), check

    class Commands(LineReceiver):
        """Obeys the orchestrator's commands, one at a time."""

        delimiter = b"\n"

        def __init__(self):
            self.factory = self.root = None
            self.runners = {}
            self.prof = None

        def say(self, tag, obj=None):
            line = tag if obj is None else f"{tag} {json.dumps(obj)}"
            self.transport.write(line.encode() + b"\n")

        @defer.inlineCallbacks
        def start(self):
            try:
                self.factory, self.root = yield connect()
            except Exception as exc:
                self.say("ERR", short_error(exc))
                reactor.stop()
                return
            self.say("READY")
            self.prof = start_profiler(args)

        def lineReceived(self, line):
            msg = json.loads(line)
            if msg["cmd"] == "quit":
                self.finish()
                return
            self.handle(msg)

        @defer.inlineCallbacks
        def handle(self, msg):
            name = msg["w"]
            if self.root is None:
                try:
                    self.factory, self.root = yield connect()
                except Exception as exc:
                    self.say("ERR", f"cannot reconnect: {short_error(exc)}")
                    return
            try:
                if name not in self.runners:
                    spec = workload_spec(name)
                    self.runners[name] = make_runner(self.root, name, spec[1]())
                runner, check = self.runners[name]
                if msg["cmd"] == "check":
                    d = check()
                    d.addTimeout(args.workload_timeout, reactor)
                    if not (yield d):
                        raise AssertionError("echo returned a different value")
                    self.say("OK")
                else:
                    gc.collect()
                    d = runner(msg["n"])
                    d.addTimeout(args.workload_timeout, reactor)
                    self.say("TIME", (yield d))
            except Exception as exc:
                self.say("ERR", short_error(exc))
                self.runners.clear()
                self.factory.disconnect()
                self.factory = self.root = None  # reconnect at the next command

        def finish(self):
            stop_profiler(self.prof, args)
            self.prof = None
            if self.factory is not None:
                self.factory.disconnect()
            self.say("BYE", {"nodelay": nodelay, "peak_rss_kb": peak_rss_kb()})
            reactor.callLater(0.05, reactor.stop)

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


def start_child(argv, label):
    """A child process running this file with ``argv``; stopped for sure by the caller."""
    return Child([sys.executable, os.path.abspath(__file__), *argv], stderr=None,
                 cwd=ROOT, label=label)


def read_tagged(child, tags, timeout):
    """Wait for a stdout line starting with one of tags; return (tag, rest).

    Anything else a child prints goes to our stderr.
    """
    deadline = time.monotonic() + timeout
    while True:
        line = child.read_line(deadline - time.monotonic())
        for tag in tags:
            if line == tag or line.startswith(tag + " "):
                return tag, line[len(tag):].strip()
        sys.stderr.write(f"[{child.label}] {line}\n")


def request(child, msg, timeout):
    """Send one command to a client; return (tag, decoded payload) of the answer."""
    child.send(json.dumps(msg) + "\n")
    tag, rest = read_tagged(child, ("OK", "TIME", "ERR", "BYE"), timeout)
    return tag, (json.loads(rest) if rest else None)


def child_argv(args, role, system, extra=()):
    argv = ["--role", role, "--system", system, "--host", args.host,
            "--mode", args.mode, "--workloads", "".join(args.workloads),
            "--workload-timeout", str(args.workload_timeout),
            "--alarm", str(args.alarm)]
    if args.no_extra:
        argv.append("--no-extra")
    return argv + list(extra)


class ClientGone(Exception):
    """A client died or stopped answering: its remaining cells are errors."""


def start_system(args, system, children):
    """Start one system's server and client; return the client once READY."""
    prof_dir = args.profile_dir
    srv_extra = (["--profile-out", os.path.join(prof_dir, f"{system}-server.prof")]
                 if prof_dir else [])
    cli_extra = (["--profile-out", os.path.join(prof_dir, f"{system}-client.prof")]
                 if prof_dir else [])
    server = start_child(child_argv(args, "server", system, srv_extra), f"{system} server")
    children.append(server)
    _tag, port = read_tagged(server, ("PORT",), timeout=30)
    client = start_child(child_argv(args, "client", system, ["--port", port] + cli_extra),
                         f"{system} client")
    children.append(client)
    tag, rest = read_tagged(client, ("READY", "ERR"), timeout=30)
    if tag == "ERR":
        raise RuntimeError(f"{system} client could not connect: {rest}")
    return server, client


def measure_workload(args, name, clients, results):
    """Measure one workload on every live client, repeats interleaved."""
    mode = MODES[args.mode]
    _title, _factory, _raw, calls, min_n, max_n = workload_spec(name)
    timeout = args.workload_timeout + 30
    systems = [s for s in clients if name != EXTRA_D_GREENLETS or s == "pbgreen"]

    def fail(system, error):
        results[system]["workloads"][name] = {"error": error}

    def run(system, n):
        try:
            tag, payload = request(clients[system], {"cmd": "run", "w": name, "n": n}, timeout)
        except (TimeoutError, RuntimeError) as exc:
            raise ClientGone(str(exc)) from exc
        if tag != "TIME":
            raise ValueError(payload)
        return float(payload)

    live, n_iter, times = [], {}, {}
    for system in systems:
        try:
            try:
                tag, payload = request(clients[system], {"cmd": "check", "w": name}, timeout)
            except (TimeoutError, RuntimeError) as exc:
                raise ClientGone(str(exc)) from exc
            if tag != "OK":
                raise ValueError(payload)
            n_iter[system] = calibrate(lambda n: run(system, n), mode["warmup"],
                                       mode["target"], min_n, max_n)
            live.append(system)
            times[system] = []
        except ValueError as exc:
            fail(system, str(exc))
        except ClientGone as exc:
            fail(system, f"client gone: {exc}")
            clients.pop(system).stop(grace=1, timeout=2)
    for rep in range(mode["repeats"]):
        k = rep % len(live) if live else 0
        for system in live[k:] + live[:k]:
            if system not in times:
                continue
            try:
                times[system].append(run(system, n_iter[system]) / n_iter[system])
            except ValueError as exc:
                fail(system, str(exc))
                del times[system]
            except ClientGone as exc:
                fail(system, f"client gone: {exc}")
                del times[system]
                clients.pop(system).stop(grace=1, timeout=2)
    for system, per_iter in times.items():
        results[system]["workloads"][name] = summarize(n_iter[system], per_iter, calls)


def not_installed(system):
    """Why ``system`` cannot run here (its package is missing), or ``None``."""
    import importlib.util

    module = SYSTEM_NEEDS.get(system)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return (f"not installed ({module} is missing: `make bench`, or "
            f"pip install -e '.[bench]')")


def run_all(args, children, results, stats):
    systems = args.systems
    servers, clients = {}, {}
    for system in systems:
        results[system] = {"workloads": {}, "info": {}}
        missing = not_installed(system)
        if missing:
            results[system]["error"] = missing
            print(f"  {SYSTEM_TITLES[system]}: {missing}; measuring the others", flush=True)
            continue
        try:
            servers[system], clients[system] = start_system(args, system, children)
        except (TimeoutError, RuntimeError) as exc:
            results[system]["error"] = str(exc)
            print(f"  {SYSTEM_TITLES[system]} did not start: {exc}", flush=True)
    names = list(args.workloads)
    if "pbgreen" in clients and "d" in names and not args.no_extra:
        names.append(EXTRA_D_GREENLETS)
    for name in names:
        t0 = time.perf_counter()
        title = (WORKLOADS[name][0] if name in WORKLOADS
                 else "(d) again, pbgreen with one greenlet per call")
        print(f"  {title} ...", end="", flush=True)
        measure_workload(args, name, clients, results)
        print(f" {time.perf_counter() - t0:.1f}s", flush=True)
    for system, client in clients.items():
        try:
            tag, info = request(client, {"cmd": "quit"}, timeout=30)
            if tag == "BYE":
                results[system]["info"] = info
        except (TimeoutError, RuntimeError) as exc:
            results[system]["info"] = {"error": str(exc)}
        client.stop(grace=5, timeout=2)
    for system, server in servers.items():
        server.send("stop\n")
        try:
            _tag, rest = read_tagged(server, ("STATS",), timeout=15)
            stats[system] = json.loads(rest)
        except (TimeoutError, RuntimeError) as exc:
            stats[system] = {"error": str(exc)}
        server.stop(grace=5, timeout=2)


def fmt_us(cell):
    if cell is None:
        return "-"
    if "error" in cell:
        return "n/a" if cell.get("missing") else "ERROR"
    us = cell["us_per_call"]
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.1f} µs"


def fmt_ratio(num, den):
    if not num or not den or "error" in num or "error" in den:
        return "-"
    return f"{num['us_per_call'] / den['us_per_call']:.2f}x"


def fmt_rate(cell):
    if not cell or "error" in cell:
        return "-" if cell is None else "ERROR"
    return f"{cell['calls_per_s']:,.0f}/s"


def render_table(headers, rows):
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def wire_sizes():
    """Bytes on the wire per payload: raw frame vs PB (jelly + banana, pb dialect)."""
    sizes = {}
    try:
        from twisted.spread import banana, jelly
        enc = banana.Banana()
        enc.connectionMade()
        enc._selectDialect(b"pb")
    except Exception:  # Twisted missing: still report raw sizes
        enc = None
    import io
    for name, (_t, factory, raw_enc, *_rest) in WORKLOADS.items():
        payload = factory()
        entry = {"raw_frame": 4 + len(raw_enc(payload))}
        if enc is not None:
            stream = io.BytesIO()
            enc.transport = stream
            enc.sendEncoded(jelly.jelly(payload))
            entry["pb_jelly_args"] = len(stream.getvalue())
        sizes[name] = entry
    return sizes


def orchestrate(args):
    systems = args.systems
    mode = MODES[args.mode]
    print(f"pbgreen benchmark ({args.mode} run): {', '.join(SYSTEM_TITLES[s] for s in systems)}; "
          f"workloads {', '.join(args.workloads)}", flush=True)
    print(f"each cell: warm-up {mode['warmup']}s, then median of {mode['repeats']} repeats "
          f"of ~{mode['target']}s, repeats interleaved across systems; server and client "
          f"are separate processes on {args.host}", flush=True)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"note: 1-minute load average is {load_before:.2f} before starting; other "
              "work on this machine will skew the numbers", flush=True)
    started = time.perf_counter()
    children = []
    results, stats = {}, {}
    try:
        run_all(args, children, results, stats)
    finally:
        for child in children:
            child.stop(grace=2, timeout=2)
    total = time.perf_counter() - started

    def cell(system, name):
        res = results.get(system)
        if res is None:
            return None
        found = res["workloads"].get(name)
        if found is None and "error" in res:
            if res["error"].startswith("not installed"):
                return {"error": res["error"], "missing": True}
            return {"error": "system failed to start"}
        return found

    print()
    headers = ["workload"] + [SYSTEM_TITLES[s] for s in systems]
    both = "pbgreen" in systems and "twisted" in systems
    if both:
        headers.append("Twisted/pbgreen")
    rows = []
    for name in args.workloads:
        cells = [cell(s, name) for s in systems]
        row = [WORKLOADS[name][0]] + [fmt_us(c) for c in cells]
        if both:
            row.append(fmt_ratio(cell("twisted", name), cell("pbgreen", name)))
        rows.append(row)
        if name == "d":
            rows.append([f"    {BATCH} in flight: calls/s"] + [fmt_rate(c) for c in cells]
                        + ([""] if both else []))
    print("Time per call (median; lower is better)")
    print(render_table(headers, rows))
    if both:
        print("Twisted/pbgreen: speed-up of pbgreen over Twisted PB (higher is better)")

    # Every system against the two limits: the bare echo, and (for structured
    # data) the bare echo that pickles each message on both sides.
    references = [(ref, [name for name in args.workloads if ref == "raw" or name in STRUCTURED])
                  for ref in ("raw", "rawpickle") if ref in systems]
    for ref, names in references:
        if not names:
            continue
        others = [s for s in systems if s != ref and not (ref == "rawpickle" and s == "raw")]
        print(f"\nEach system's time divided by {SYSTEM_TITLES[ref]}'s (lower is better; "
              "1.00x is no overhead over it)")
        print(render_table(["workload"] + [f"{SYSTEM_TITLES[s]}/{ref}" for s in others],
                           [[WORKLOADS[name][0]]
                            + [fmt_ratio(cell(s, name), cell(ref, name)) for s in others]
                            for name in names]))

    extra = cell("pbgreen", EXTRA_D_GREENLETS)
    if extra:
        if "error" in extra:
            print(f"\npbgreen (d) with one greenlet per call instead of callRemoteAsync: "
                  f"ERROR {extra['error']}")
        else:
            print(f"\npbgreen (d) with one greenlet per call instead of callRemoteAsync: "
                  f"{fmt_us(extra)} per call, {fmt_rate(extra)}")

    print("\nPeak RSS (ru_maxrss)")
    rss_rows = []
    for system in systems:
        st = stats.get(system, {})
        cli = results.get(system, {}).get("info", {})

        def mb(kb):
            return f"{kb / 1024:.1f} MB" if kb else "-"
        rss_rows.append([SYSTEM_TITLES[system], mb(st.get("peak_rss_kb")),
                         mb(st.get("rss_after_start_kb")), mb(cli.get("peak_rss_kb"))])
    print(render_table(["system", "server peak", "server at start", "client peak"], rss_rows))

    if not args.no_idle:
        import idle_memory  # benchmarks/idle_memory.py, next to this file

        counts = (2000,) if args.quick else (2000, 10_000)
        idle = {s: [idle_memory.measure(s, n) for n in counts]
                for s in ("pbgreen", "twisted") if s in systems}
        print("\nServer memory per idle connection (RSS growth / connections, "
              "benchmarks/idle_memory.py)")
        print(render_table(["system"] + [f"{n:,} connections" for n in counts],
                           [[SYSTEM_TITLES[s]] + [f"{b / 1024:.1f} KB" for b in row]
                            for s, row in idle.items()]))

    print("\nTCP_NODELAY")
    for system in systems:
        st = stats.get(system, {})
        cli = results.get(system, {}).get("info", {})
        how = st.get("nodelay_how")
        print(f"  {SYSTEM_TITLES[system]:<11} server: set on {sum(st.get('nodelay', []))}"
              f"/{st.get('connections', 0)} accepted sockets"
              f" (already on when checked: {sum(st.get('nodelay_preset', []))})"
              + (f" [{how}]" if how else "")
              + f"; client: {cli.get('nodelay')}")

    sizes = wire_sizes()
    print("\nWhat the raw echo sends (4-byte big-endian length + payload; raw pickle "
          "sends pickle.dumps(payload) instead, made and parsed on both sides per message):")
    for name in args.workloads:
        sz = sizes[name]
        pb_part = (f"; PB's jellied argument alone is {sz['pb_jelly_args']:,} bytes"
                   if "pb_jelly_args" in sz else "")
        print(f"  {name}: {RAW_DESCRIPTION[name]} - {sz['raw_frame']:,} bytes per frame{pb_part}")
    errors = [(s, n, c["error"]) for s in systems
              for n, c in (results.get(s, {}).get("workloads") or {}).items()
              if isinstance(c, dict) and "error" in c]
    errors += [(s, "-", r["error"]) for s, r in results.items()
               if "error" in r and not r["error"].startswith("not installed")]
    missing = [(s, r["error"]) for s, r in results.items()
               if r.get("error", "").startswith("not installed")]
    for s, why in missing:  # not an error: the run measured the systems it could
        print(f"\n{SYSTEM_TITLES[s]} was not measured: {why}")
    if errors:
        print("\nErrors:")
        for s, n, e in errors:
            print(f"  {SYSTEM_TITLES[s]} {n}: {e}")
    load_after = os.getloadavg()[0]
    print(f"\ntotal wall time {total:.1f}s; 1-minute load average {load_before:.2f} before, "
          f"{load_after:.2f} after (the benchmark itself adds up to 2)")

    if args.json:
        doc = {
            "mode": args.mode, "settings": mode, "host": args.host,
            "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "wall_time_s": total, "loadavg_before": load_before,
            "loadavg_after": load_after, "results": results, "server_stats": stats,
            "wire_sizes": sizes, "raw_sends": RAW_DESCRIPTION,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"results written to {args.json}")

    if args.profile_dir:
        print_profiles(args)
    return 1 if errors else 0


def print_profiles(args):
    import pstats
    for system in args.systems:
        for side in ("server", "client"):
            path = os.path.join(args.profile_dir, f"{system}-{side}.prof")
            if not os.path.exists(path):
                continue
            print(f"\n===== cProfile {SYSTEM_TITLES[system]} {side}: top {args.profile_top} by tottime =====")
            pstats.Stats(path, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile_top)


# --------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short run (about 40 s instead of about 4 minutes)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of: " + ",".join(SYSTEMS))
    p.add_argument("--workloads", default="abcd", help="subset of abcd, e.g. 'ab'")
    p.add_argument("--profile", action="store_true",
                   help="run server and client under cProfile and print the top functions")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--no-idle", action="store_true",
                   help="skip the idle-connection memory rows (2,000 and 10,000 connections)")
    p.add_argument("--no-extra", action="store_true",
                   help="skip the pbgreen one-greenlet-per-call variant of (d)")
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    # internal: children
    p.add_argument("--role", default="orchestrate", choices=["orchestrate", "server", "client"],
                   help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--workload-timeout", type=float, default=None, metavar="S",
                   help="seconds one check or timed batch may take before its cell is "
                        "an ERROR (default 60 quick, 120 full)")
    p.add_argument("--alarm", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode is None:
        args.mode = "quick" if args.quick else "full"
    if isinstance(args.systems, str):
        args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {bad}; choose from {SYSTEMS}")
    args.workloads = [w for w in args.workloads if w in WORKLOADS]
    if not args.workloads:
        p.error("no workloads selected")
    if args.workload_timeout is None:
        args.workload_timeout = 60.0 if args.mode == "quick" else 120.0
    if args.alarm is None:
        args.alarm = 300 if args.mode == "quick" else 900
    args.profile_dir = None
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.role == "orchestrate":
        if args.profile:
            import tempfile
            args.profile_dir = tempfile.mkdtemp(prefix="pbgreen-bench-prof-")
        # turn SIGTERM into SystemExit so the finally blocks kill the children
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return orchestrate(args)
    # A child never outlives a stuck run: the default SIGALRM action exits.
    signal.alarm(args.alarm)
    if args.role == "server":
        {"pbgreen": server_pbgreen, "twisted": server_twisted, "raw": server_raw,
         "rawpickle": server_raw, "rpyc": server_rpyc, "pyro5": server_pyro5}[args.system](args)
        return 0
    client = {"pbgreen": client_pbgreen, "twisted": client_twisted, "raw": client_raw,
              "rawpickle": client_raw, "rpyc": client_rpyc, "pyro5": client_pyro5}[args.system]
    try:
        client(args)
    except Exception as exc:
        emit("ERR", short_error(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
