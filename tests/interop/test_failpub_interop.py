"""Failures as values, pb.RemoteError and publish against real Twisted peers
(twisted_failpub.py in a subprocess), both ways."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

import pbgreen as pb
from pbgreen import publish
from pbgreen.testing.processes import Child

SCRIPT = Path(__file__).resolve().parent / "twisted_failpub.py"
PUBLISHED_NAME = "failpub.Catalog"


@pytest.fixture(scope="module")
def twisted_failpub_server():
    """twisted_failpub.py serving its FailPubRoot (``.host``, ``.port``)."""
    with Child([sys.executable, str(SCRIPT), "serve"], cwd=SCRIPT.parent, grace=5) as server:
        server.wait_ready(timeout=20)
        server.host = "127.0.0.1"
        yield server


@pytest.fixture
def twisted_root(twisted_failpub_server):
    with pb.PBClient(twisted_failpub_server.host, twisted_failpub_server.port,
                     timeout=10) as client:
        yield client.getRootObject()


def describe(value):
    """The same JSON facts twisted_failpub.describe reports."""
    if not isinstance(value, pb.CopiedFailure):
        return {"copied": False, "repr": repr(value)}
    return {"copied": True, "type": value.type, "message": value.getErrorMessage(),
            "lookup": bool(value.check("builtins.LookupError")),
            "traceback": value.remoteTraceback}


def copied(type_name, message, lookup=False):
    return {"copied": True, "type": type_name, "message": message, "lookup": lookup,
            "traceback": "Traceback unavailable\n"}


# --- pbgreen client -> Twisted server -------------------------------------------------


def test_twisted_server_receives_pbgreen_copyable_failures(twisted_root):
    answer = twisted_root.callRemote("complete", pb.CopyableFailure(KeyError("job 7")),
                                     extra=[pb.CopyableFailure(ValueError("inner"))])
    # the Twisted method checked isinstance(arg, pb.CopiedFailure) and read it
    assert answer == {"result": copied("builtins.KeyError", "'job 7'", lookup=True),
                      "extra": [copied("builtins.ValueError", "inner")]}


def test_failures_in_a_twisted_answer_arrive_as_copied_failures(twisted_root):
    first, nested, three = twisted_root.callRemote("results")
    assert describe(first) == copied("builtins.KeyError", "'missing'", lookup=True)
    later = nested["later"][0]
    assert describe(later) == copied("twisted.spread.pb.Error", "expected")
    assert isinstance(later, pb.Error) and three == 3


def test_a_failure_a_twisted_method_returns_raises(twisted_root):
    with pytest.raises(ValueError, match="returned on purpose") as info:
        twisted_root.callRemote("failWith", "returned on purpose")
    assert isinstance(info.value, pb.RemoteError)
    assert twisted_root.callRemote("results")[2] == 3  # the connection is fine


def test_remote_error_from_a_twisted_server(twisted_root):
    with pytest.raises(pb.RemoteError) as info:
        twisted_root.callRemote("boom")
    e = info.value
    assert e.remoteType == "builtins.LookupError" and e.remoteType == b"builtins.LookupError"
    assert str(e) == "twisted side" and e.remoteTraceback
    assert isinstance(e, LookupError) and isinstance(e, pb.CopiedFailure)


class TwistedCatalogCopy(publish.RemotePublished):
    pass


pb.setUnjellyableForClass(PUBLISHED_NAME, TwistedCatalogCopy)


def test_a_twisted_publisher_to_a_pbgreen_client(twisted_failpub_server):
    def session():
        with pb.PBClient(twisted_failpub_server.host, twisted_failpub_server.port,
                         timeout=10) as client:
            root = client.getRootObject()
            copy = publish.whenReady(root.callRemote("catalog"), timeout=10)
            return copy, root.callRemote("fetches"), root

    first, fetches, _ = session()
    assert isinstance(first, TwistedCatalogCopy) and first.items == ["apple"]
    assert first.getFileName() == "None-None-twisted-catalog.pub" and fetches == 1
    with pb.PBClient(twisted_failpub_server.host, twisted_failpub_server.port) as client:
        client.getRootObject().callRemote("addItem", "pear", False)
    second, fetches, _ = session()
    assert second.items == ["apple"] and fetches == 1  # kept from the first session
    with pb.PBClient(twisted_failpub_server.host, twisted_failpub_server.port) as client:
        client.getRootObject().callRemote("addItem", "plum", True)  # republish
    third, fetches, _ = session()
    assert third.items == ["apple", "pear", "plum"] and fetches == 2


# --- Twisted client -> pbgreen server -------------------------------------------------


class Catalog(publish.Publishable):
    def __init__(self, publishedID, items):
        super().__init__(publishedID)
        self.items = items
        self.fetches = 0

    def getTypeToCopy(self):
        return PUBLISHED_NAME

    def getStateToPublish(self):
        self.fetches += 1
        return {"items": list(self.items)}


class FailPubRoot(pb.Root):
    """The pbgreen twin of twisted_failpub.FailPubRoot."""

    def __init__(self):
        self.catalog = Catalog("pbgreen-catalog", ["apple"])
        self.received = []

    def remote_complete(self, result, extra=None):
        self.received.append(result)
        return {"result": describe(result), "extra": [describe(e) for e in extra or []]}

    def remote_results(self):
        return [pb.CopyableFailure(KeyError("missing")),
                {"later": (pb.CopyableFailure(pb.Error("expected")),)}, 3]

    def remote_failWith(self, message):
        return pb.CopyableFailure(ValueError(message))

    def remote_boom(self):
        raise LookupError("twisted side")

    def remote_catalog(self):
        return self.catalog

    def remote_addItem(self, item, republish):
        self.catalog.items.append(item)
        if republish:
            self.catalog.republish()

    def remote_fetches(self):
        return self.catalog.fetches


def test_twisted_client_sends_and_receives_failures(serve_pbgreen, twisted_client):
    root = FailPubRoot()
    server = serve_pbgreen(root)
    result = twisted_client("failures", "127.0.0.1", server.address[1], script=SCRIPT).result()
    assert result["answer"] == {"result": copied("builtins.KeyError", "'job 7'", lookup=True),
                                "extra": [copied("builtins.ValueError", "inner")]}
    assert isinstance(root.received[0], KeyError)  # the pbgreen method got a real failure
    assert result["results"] == [copied("builtins.KeyError", "'missing'", lookup=True),
                                 copied("pbgreen.errors.Error", "expected"), 3]
    # a failure returned at the top level fails the Twisted caller's Deferred
    assert result["returned"] == ["err", copied("builtins.ValueError", "returned on purpose")]
    assert result["remote_error"] == {"remoteType": "builtins.LookupError",
                                      "message": "twisted side"}


def test_a_pbgreen_publisher_to_a_twisted_client(serve_pbgreen, twisted_client):
    root = FailPubRoot()
    server = serve_pbgreen(root)
    result = twisted_client("publish", "127.0.0.1", server.address[1], script=SCRIPT).result()
    first, second, third = result["sessions"]
    assert first == {"items": ["apple"], "clean": False, "activated": True,
                     "file": "None-None-pbgreen-catalog.pub"}
    assert second["items"] == ["apple"] and second["clean"]  # Twisted's kept copy
    assert third["items"] == ["apple", "pear", "plum"] and not third["clean"]
    assert root.catalog.fetches == 2


# --- a custom checker, a Twisted client logging in ------------------------------------


class DigestChecker:
    """Keeps only MD5 digests of the passwords: declares IUsernameMD5Password."""

    credentialInterfaces = (pb.IUsernameMD5Password,)

    def __init__(self):
        self.digests = {b"alice": hashlib.md5(b"secret").digest()}
        self.checked = []

    def requestAvatarId(self, credentials):
        self.checked.append(credentials.username)
        digest = self.digests.get(credentials.username)
        if digest is None or not credentials.checkMD5Password(digest):
            raise pb.UnauthorizedLogin()
        return credentials.username


class Alice(pb.Avatar):
    def perspective_whoami(self):
        return b"alice"


class AliceRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        return interfaces[0], Alice(), lambda: None


def test_a_twisted_client_logs_in_through_a_registered_custom_checker(serve_pbgreen,
                                                                     twisted_client):
    checker = DigestChecker()
    portal = pb.Portal(AliceRealm())
    portal.registerChecker(checker)
    server = serve_pbgreen(portal)
    # twisted_login_client.py "badpass": a wrong password, then the right one
    result = twisted_client("badpass", "127.0.0.1", server.address[1],
                            script=SCRIPT.parent / "twisted_login_client.py").result()
    assert result["kind"] == "err" and result["check_unauthorized"] is True
    assert result["after"] == "b'alice'"
    assert checker.checked == [b"alice", b"alice"]
