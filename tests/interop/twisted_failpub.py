"""A real Twisted PB peer for failures as values, RemoteError and publish.

Usage:
    python twisted_failpub.py serve
        Serves ``FailPubRoot`` on 127.0.0.1, port 0; prints ``PORT <n>``
        first; exits when stdin closes or on SIGTERM.
    python twisted_failpub.py SCENARIO HOST PORT
        Runs one client scenario (``failures`` or ``publish``) against a
        pbgreen server and prints its result as one JSON line.

The publish scenario writes Twisted's ``.pub`` files into the current
directory (Twisted's RemotePublished keeps its copies there), so the test
runs it in a temporary directory.
"""

import os
import shutil
import sys
import tempfile

from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from twisted.spread import pb, publish

from twisted_common import run_scenario, serve_until_stdin_closes

DEADLINE = 20.0
PUBLISHED_NAME = "failpub.Catalog"  # the class name both sides register


def failure(exc):
    try:
        raise exc
    except BaseException:
        return Failure()


def describe(value):
    """JSON facts about a received failure (Twisted's CopiedFailure)."""
    if not isinstance(value, pb.CopiedFailure):
        return {"copied": False, "repr": repr(value)}
    kind = value.type.decode() if isinstance(value.type, bytes) else str(value.type)
    return {"copied": True, "type": kind, "message": value.getErrorMessage(),
            "lookup": bool(value.check("builtins.LookupError")),
            "traceback": value.traceback}


# --- the server side --------------------------------------------------------------


class Catalog(publish.Publishable):
    def __init__(self, publishedID, items):
        publish.Publishable.__init__(self, publishedID)
        self.items = items
        self.fetches = 0

    def getTypeToCopyFor(self, perspective):
        return PUBLISHED_NAME.encode()  # Twisted sends the name as bytes

    def getStateToPublish(self):
        self.fetches += 1
        return {"items": list(self.items)}


CATALOG = Catalog("twisted-catalog", ["apple"])


class FailPubRoot(pb.Root):
    def remote_complete(self, result, extra=None):
        return {"result": describe(result), "extra": [describe(e) for e in extra or []]}

    def remote_results(self):
        return [pb.CopyableFailure(failure(KeyError("missing"))),
                {"later": (pb.CopyableFailure(failure(pb.Error("expected"))),)}, 3]

    def remote_failWith(self, message):
        return pb.CopyableFailure(failure(ValueError(message)))

    def remote_boom(self):
        raise LookupError("twisted side")

    def remote_catalog(self):
        return CATALOG

    def remote_addItem(self, item, republish):
        CATALOG.items.append(item)
        if republish:
            CATALOG.republish()

    def remote_fetches(self):
        return CATALOG.fetches


def serve():
    serve_until_stdin_closes(pb.PBServerFactory(FailPubRoot()))


# --- the client side --------------------------------------------------------------


class CatalogCopy(publish.RemotePublished):
    pass


pb.setUnjellyableForClass(PUBLISHED_NAME, CatalogCopy)


def outcome(d):
    return d.addCallbacks(lambda r: ("ok", r), lambda f: ("err", f))


@defer.inlineCallbacks
def scenario_failures(root, host, port):
    f = failure(KeyError("job 7"))
    answer = yield root.callRemote("complete", pb.CopyableFailure(f),
                                   extra=[pb.CopyableFailure(failure(ValueError("inner")))])
    results = yield root.callRemote("results")
    kind, returned = yield outcome(root.callRemote("failWith", "returned on purpose"))
    try:
        yield root.callRemote("boom")
    except pb.RemoteError as e:
        remote_error = {"remoteType": e.remoteType.decode(), "message": str(e)}
    return {
        "answer": answer,
        "results": [describe(results[0]), describe(results[1]["later"][0]), results[2]],
        "returned": [kind, describe(returned) if kind == "err" else repr(returned)],
        "remote_error": remote_error,
    }


@defer.inlineCallbacks
def session(host, port):
    """One connection: fetch the catalog, wait until it is activated, disconnect."""
    factory = pb.PBClientFactory()
    connector = reactor.connectTCP(host, port, factory, timeout=10)
    root = yield factory.getRootObject()
    copy = yield publish.whenReady(root.callRemote("catalog"))
    # whenReady fires before Twisted writes the .pub file: let it finish first
    yield task.deferLater(reactor, 0, lambda: None)
    facts = {"items": copy.items, "clean": bool(copy._wasCleanWhenLoaded),
             "activated": bool(copy.isActivated), "file": copy.getFileName()}
    factory.disconnect()
    connector.disconnect()
    return facts, root


@defer.inlineCallbacks
def scenario_publish(root, host, port):
    home, where = os.getcwd(), tempfile.mkdtemp(prefix="pbgreen-publish-")
    os.chdir(where)  # Twisted keeps its copies as .pub files in the current directory
    try:
        first, _ = yield session(host, port)
        yield root.callRemote("addItem", "pear", False)
        second, _ = yield session(host, port)
        yield root.callRemote("addItem", "plum", True)
        third, _ = yield session(host, port)
    finally:
        os.chdir(home)
        shutil.rmtree(where, ignore_errors=True)
    return {"sessions": [first, second, third]}


SCENARIOS = {"failures": scenario_failures, "publish": scenario_publish}


def main(argv):
    if argv[1:] == ["serve"]:
        serve()
        return 0
    scenario, host, port = argv[1], argv[2], int(argv[3])
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory, timeout=10)
    d = factory.getRootObject()
    d.addCallback(SCENARIOS[scenario], host, port)
    return run_scenario(factory, d, scenario, DEADLINE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
