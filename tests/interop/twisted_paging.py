"""Twisted's own paging (twisted.spread.util), the peer for pbgreen's paging tests.

Usage:
    python twisted_paging.py serve
        A Twisted PB server on 127.0.0.1, port 0 (prints ``PORT <n>`` first;
        exits when stdin closes). Its root pages with Twisted's pagers:
        ``stringPages(collector, size, chunkSize)`` (StringPager),
        ``filePages(collector, size)`` (FilePager over an in-memory file),
        ``raises(collector)`` (raises ValueError before paging), and
        ``callbacks()`` (how many pager callbacks have run).
    python twisted_paging.py SCENARIO HOST PORT
        A Twisted client calling ``twisted.spread.util.getAllPages`` on the
        root's ``METHOD`` for each method named by the scenario (see
        ``SCENARIOS``); prints one JSON line: per method, the number of pages
        and the SHA-256 of their concatenation.

Both sides make the data with ``pattern(size)``, so a test compares hashes.
"""

import hashlib
import io
import sys

from twisted.internet import defer, reactor
from twisted.python import log
from twisted.spread import pb, util

from twisted_common import run_scenario, stop_when_stdin_closes

DEADLINE = 20.0  # seconds for a whole client scenario
SIZE = 1_000_003  # bytes each paging call sends (not a multiple of any page size)


def pattern(size):
    """``size`` bytes that are not all alike (the test side has the same function)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def digest(pages):
    joined = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in pages)
    return {"pages": len(pages), "bytes": len(joined),
            "sha256": hashlib.sha256(joined).hexdigest()}


# --- server -----------------------------------------------------------------------


class PagingRoot(pb.Root):
    def __init__(self):
        self.callbacks = 0

    def _called_back(self):
        self.callbacks += 1

    def remote_stringPages(self, collector, size, chunkSize):
        util.StringPager(collector, pattern(size), chunkSize, self._called_back)

    def remote_filePages(self, collector, size):
        util.FilePager(collector, io.BytesIO(pattern(size)), self._called_back)

    def remote_raises(self, collector):
        raise ValueError("no pages for you")

    def remote_callbacks(self):
        return self.callbacks


def serve():
    log.startLogging(sys.stderr, setStdout=False)
    port = reactor.listenTCP(0, pb.PBServerFactory(PagingRoot()), interface="127.0.0.1")
    sys.stdout.write("PORT %d\n" % port.getHost().port)
    sys.stdout.flush()
    stop_when_stdin_closes()
    reactor.run()


# --- client -------------------------------------------------------------------------


@defer.inlineCallbacks
def _get_all(root, calls):
    results = {}
    for name, args in calls:
        pages = yield util.getAllPages(root, name, *args)
        results[name] = digest(pages)
    return results


SCENARIOS = {
    # the pbgreen server (test_paging_interop.py) implements these methods
    "pagers": [("stringPages", (SIZE, 1000)), ("filePages", (SIZE,)),
               ("emptyString", ()), ("emptyFile", ())],
    "generated": [("generated", (SIZE, 4096))],
}


def main(argv):
    if argv[1:] == ["serve"]:
        serve()
        return 0
    if len(argv) != 4 or argv[1] not in SCENARIOS:
        sys.stderr.write("usage: twisted_paging.py serve | {%s} HOST PORT\n"
                         % ",".join(sorted(SCENARIOS)))
        return 2
    scenario, host, port = argv[1], argv[2], int(argv[3])
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory, timeout=10)
    d = factory.getRootObject()
    d.addCallback(_get_all, SCENARIOS[scenario])
    return run_scenario(factory, d, scenario, DEADLINE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
