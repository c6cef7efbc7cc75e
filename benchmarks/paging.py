"""Paging a large file: pbgreen.util next to Twisted's twisted.spread.util.

Usage:
    python benchmarks/paging.py [--mb 50] [--slow]

For each system, a server process pages one file with ``FilePager`` and a
client process reads it page by page, hashing as it goes (pbgreen:
``util.page_iter``; Twisted: a collector whose ``remote_gotPage`` hashes and
whose ``remote_endedPaging`` fires a Deferred). ``--slow`` makes the reader
sleep 1 ms every 16 pages. Printed per system: seconds for the whole file
and MB/s, the server's memory growth while paging (peak RSS, ``VmHWM``,
minus its RSS just before), and that growth as a share of the file. The
hash read back is compared with the file's.

Internal modes (started by the orchestrator): ``serve SYSTEM`` and
``read SYSTEM PORT PATH [slow]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbgreen.testing.processes import Child, start  # noqa: E402

RESULT = "RESULT "


def memory_kb() -> dict[str, int]:
    """This process's VmRSS and VmHWM (peak RSS), in KiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0+: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# --- servers ----------------------------------------------------------------------


def paging_root(base: type, file_pager: type) -> type:
    """The server's root class, for either system's ``pb.Root`` and ``FilePager``."""

    class Root(base):  # type: ignore[misc, valid-type]
        def remote_file(self, collector, path):
            fd = open(path, "rb")
            file_pager(collector, fd, fd.close)

        def remote_memory(self):
            return memory_kb()

        def remote_reset_peak(self):
            reset_peak()
            return memory_kb()

    return Root


def serve_pbgreen() -> None:
    import pbgreen as pb
    from pbgreen import util

    server = pb.PBServer(paging_root(pb.Root, util.FilePager)(), port=0, host="127.0.0.1")
    server.start()
    print("PORT", server.address[1], flush=True)
    server.serve_forever()


def serve_twisted() -> None:
    from twisted.internet import reactor
    from twisted.spread import pb, util

    root = paging_root(pb.Root, util.FilePager)()
    port = reactor.listenTCP(0, pb.PBServerFactory(root), interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


# --- readers ----------------------------------------------------------------------


def read_pbgreen(port: int, path: str, slow: bool) -> dict:
    import gevent

    import pbgreen as pb
    from pbgreen import util

    with pb.PBClient("127.0.0.1", port) as client:
        root = client.getRootObject()
        before = root.callRemote("reset_peak")
        digest = hashlib.sha256()
        started = time.perf_counter()
        for n, page in enumerate(util.page_iter(root, "file", path), 1):
            digest.update(page)
            if slow and n % 16 == 0:
                gevent.sleep(0.001)
        seconds = time.perf_counter() - started
        after = root.callRemote("memory")
    return {"seconds": seconds, "sha256": digest.hexdigest(), "before": before, "after": after}


def read_twisted(port: int, path: str, slow: bool) -> dict:
    from twisted.internet import defer, reactor, task
    from twisted.spread import pb

    result: dict = {}

    class Collector(pb.Referenceable):
        def __init__(self):
            self.digest = hashlib.sha256()
            self.pages = 0
            self.done = defer.Deferred()

        def remote_gotPage(self, page):
            self.digest.update(page)
            self.pages += 1
            if slow and self.pages % 16 == 0:
                return task.deferLater(reactor, 0.001, lambda: None)

        def remote_endedPaging(self):
            self.done.callback(None)

    @defer.inlineCallbacks
    def run(root):
        result["before"] = yield root.callRemote("reset_peak")
        collector = Collector()
        started = time.perf_counter()
        yield root.callRemote("file", collector, path)
        yield collector.done
        result["seconds"] = time.perf_counter() - started
        result["sha256"] = collector.digest.hexdigest()
        result["after"] = yield root.callRemote("memory")

    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    d = factory.getRootObject().addCallback(run)
    d.addErrback(lambda f: result.setdefault("error", f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return result


# --- orchestrator -------------------------------------------------------------------


def measure(system: str, path: str, slow: bool) -> dict:
    here = Path(__file__).resolve()
    with start([sys.executable, str(here), "serve", system], timeout=30) as server:
        with Child([sys.executable, str(here), "read", system, str(server.port), path]
                   + (["slow"] if slow else [])) as reader:
            line = reader.read_line(600)
            if not line.startswith(RESULT):
                raise RuntimeError(f"{system} reader: {line}\n{reader.stderr}")
            return json.loads(line[len(RESULT):])


def main(argv: list[str]) -> int:
    if argv[1:2] == ["serve"]:
        {"pbgreen": serve_pbgreen, "twisted": serve_twisted}[argv[2]]()
        return 0
    if argv[1:2] == ["read"]:
        read = {"pbgreen": read_pbgreen, "twisted": read_twisted}[argv[2]]
        print(RESULT + json.dumps(read(int(argv[3]), argv[4], argv[5:] == ["slow"])), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=50, help="file size in MiB (default 50)")
    parser.add_argument("--slow", action="store_true", help="the reader sleeps now and then")
    options = parser.parse_args(argv[1:])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pages")
        expected = hashlib.sha256()
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for i in range(options.mb):
                chunk = block[i:] + block[:i]
                f.write(chunk)
                expected.update(chunk)
        size_kb = options.mb * 1024
        print(f"paging a {options.mb} MiB file with FilePager"
              f"{' to a slow reader' if options.slow else ''}")
        print(f"{'system':<8} {'seconds':>8} {'MB/s':>7} {'server growth':>14} {'of file':>8}")
        for system in ("pbgreen", "twisted"):
            r = measure(system, path, options.slow)
            if "error" in r:
                print(f"{system:<8} ERROR {r['error']}")
                continue
            ok = "" if r["sha256"] == expected.hexdigest() else "  WRONG HASH"
            growth = r["after"]["VmHWM"] - r["before"]["VmRSS"]
            print(f"{system:<8} {r['seconds']:>8.2f} {options.mb / r['seconds']:>7.0f} "
                  f"{growth / 1024:>11.1f} MB {growth / size_kb:>8.1%}{ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
