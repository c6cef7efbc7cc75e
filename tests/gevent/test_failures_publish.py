"""pbgreen <-> pbgreen over real sockets: failures as values, pb.RemoteError,
custom credential checkers, the connection object, and publish."""

from __future__ import annotations

import hashlib

import gevent
import pytest
from gevent.event import Event

import pbgreen as pb
from pbgreen import publish


# --- failures as values --------------------------------------------------------


class Jobs(pb.Root):
    def __init__(self):
        self.completed = []
        self.done = Event()

    def remote_complete(self, result, extra=None):
        self.completed.append((result, extra))
        self.done.set()
        if isinstance(result, pb.CopiedFailure):
            return ["failed", result.type, result.getErrorMessage(),
                    result.check(KeyError) is not None]
        return ["ok", result]

    def remote_results(self):
        return [pb.CopyableFailure(KeyError("missing")),
                {"later": (pb.CopyableFailure(pb.Error("expected")),)}, 3]

    def remote_failWith(self, message):
        return pb.CopyableFailure(ValueError(message))

    def remote_passOn(self, failure):
        return [pb.CopyableFailure(failure)]

    def remote_boom(self):
        raise LookupError("server side")


def test_a_failure_passed_as_an_argument_arrives_as_copied_failure(pb_server, pb_client):
    root_object = Jobs()
    root = pb_client(pb_server(root_object)).getRootObject()
    answer = root.callRemote("complete", pb.CopyableFailure(KeyError("job 7")),
                             extra=[pb.CopyableFailure(ValueError("inner"))])
    assert answer == ["failed", "builtins.KeyError", "'job 7'", True]
    ((result, extra),) = root_object.completed
    assert isinstance(result, pb.CopiedFailure) and isinstance(result, KeyError)
    assert result.remoteTraceback == "Traceback unavailable\n"
    assert result.trap(LookupError) is LookupError
    assert isinstance(extra[0], pb.CopiedFailure) and extra[0].getErrorMessage() == "inner"


def test_failures_inside_an_answer_and_passed_on(pb_server, pb_client):
    root = pb_client(pb_server(Jobs())).getRootObject()
    first, nested, three = root.callRemote("results")
    assert three == 3
    assert isinstance(first, pb.CopiedFailure) and first.type == "builtins.KeyError"
    later = nested["later"][0]
    assert isinstance(later, pb.Error) and later.getErrorMessage() == "expected"
    (again,) = root.callRemote("passOn", pb.CopyableFailure(first))
    assert again.type == "builtins.KeyError" and again.parents == first.parents


def test_a_returned_failure_raises_in_the_caller(pb_server, pb_client):
    root = pb_client(pb_server(Jobs())).getRootObject()
    with pytest.raises(ValueError, match="returned on purpose") as info:
        root.callRemote("failWith", "returned on purpose")
    assert isinstance(info.value, pb.CopiedFailure)
    with pytest.raises(pb.CopiedFailure):
        root.callRemoteAsync("failWith", "async too").get(timeout=10)
    assert root.callRemote("complete", 5) == ["ok", 5]  # the connection is fine


# --- pb.RemoteError ------------------------------------------------------------------


def test_remote_error_from_a_pbgreen_server(pb_server, pb_client):
    root = pb_client(pb_server(Jobs(), unsafeTracebacks=True)).getRootObject()
    with pytest.raises(pb.RemoteError) as info:
        root.callRemote("boom")
    e = info.value
    assert e.remoteType == "builtins.LookupError" and e.remoteType == b"builtins.LookupError"
    assert "remote_boom" in e.remoteTraceback
    assert isinstance(e, pb.CopiedFailure) and isinstance(e, LookupError)
    try:
        root.callRemote("boom")
    except LookupError as caught:  # the local class still catches it
        assert isinstance(caught, pb.RemoteError)


# --- credential interfaces and custom checkers ------------------------------------------


class Account(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name


class Realm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        return interfaces[0], Account(avatarId), lambda: None


class MD5Checker:
    """Keeps only MD5 digests of the passwords (Twisted's IUsernameMD5Password)."""

    credentialInterfaces = (pb.IUsernameMD5Password,)

    def __init__(self, **users):
        self.digests = {name.encode(): hashlib.md5(pw).digest() for name, pw in users.items()}
        self.checked = []

    def requestAvatarId(self, credentials):
        assert isinstance(credentials, pb.IUsernameMD5Password)
        self.checked.append(credentials.username)
        digest = self.digests.get(credentials.username)
        if digest is None or not credentials.checkMD5Password(digest):
            raise pb.UnauthorizedLogin()
        return credentials.username


class PlainChecker:
    """Keeps plain-text passwords (Twisted's IUsernameHashedPassword)."""

    credentialInterfaces = (pb.IUsernameHashedPassword,)

    def __init__(self, **users):
        self.users = {name.encode(): pw for name, pw in users.items()}

    def requestAvatarId(self, credentials):
        stored = self.users.get(credentials.username)
        if stored is None or not credentials.checkPassword(stored):
            raise pb.UnauthorizedLogin()
        return b"plain:" + credentials.username


@pytest.mark.parametrize("checker,expected", [
    (MD5Checker(carol=b"pw"), b"carol"),
    (PlainChecker(carol=b"pw"), b"plain:carol"),
])
def test_a_custom_checker_registered_with_register_checker(pb_server, pb_client, checker,
                                                           expected):
    portal = pb.Portal(Realm())
    portal.registerChecker(checker)
    assert portal.listCredentialsInterfaces() == list(checker.credentialInterfaces)
    server = pb_server(portal)
    avatar = pb_client(server).login(pb.UsernamePassword(b"carol", b"pw"))
    assert avatar.callRemote("whoami") == expected
    with pytest.raises(pb.UnauthorizedLogin):
        pb_client(server).login(pb.UsernamePassword(b"carol", b"wrong"))


def test_the_portal_picks_the_checker_by_the_credentials_interface(pb_server, pb_client):
    md5 = MD5Checker(dave=b"pw")
    portal = pb.Portal(Realm(), [pb.AllowAnonymousAccess()])
    portal.registerChecker(md5, pb.IUsernameMD5Password)
    server = pb_server(portal)
    assert pb_client(server).login(pb.UsernamePassword(b"dave", b"pw")).callRemote(
        "whoami") == b"dave"
    assert md5.checked == [b"dave"]
    assert pb_client(server).login(pb.Anonymous()).callRemote("whoami") == pb.ANONYMOUS
    assert md5.checked == [b"dave"]  # anonymous credentials went to the other checker


# --- the connection object ----------------------------------------------------------


def test_the_connection_object_peer_connected_close(pb_server, pb_client):
    server = pb_server(Jobs())
    root = pb_client(server).getRootObject()
    conn = root.broker
    assert conn.peer[0] == "127.0.0.1" and conn.peer[1] == server.address[1]
    assert conn.connected is True
    lost = Event()
    root.notifyOnDisconnect(lambda ref: lost.set())
    conn.close()
    assert lost.wait(10)
    assert conn.connected is False
    with pytest.raises(pb.DeadReferenceError):
        root.callRemote("complete", 1)


# --- publish -------------------------------------------------------------------------


class Catalog(publish.Publishable):
    def __init__(self, publishedID, items):
        super().__init__(publishedID)
        self.items = items
        self.fetches = 0

    def getStateToPublish(self):
        self.fetches += 1
        return {"items": list(self.items)}


class CatalogCopy(publish.RemotePublished):
    def activated(self):
        self.activations = getattr(self, "activations", 0) + 1


pb.setUnjellyableForClass(Catalog, CatalogCopy)


class Shop(pb.Root):
    def __init__(self, catalog):
        self.catalog = catalog

    def remote_catalog(self):
        return self.catalog


def test_publish_fetches_once_and_again_only_after_republish(pb_server, pb_client):
    catalog = Catalog("cat-%s" % id(object()), ["apple"])
    server = pb_server(Shop(catalog))

    first = pb_client(server).getRootObject().callRemote("catalog")
    assert isinstance(first, CatalogCopy)
    seen = []
    first.callWhenActivated(seen.append)
    assert publish.whenReady(first, timeout=10) is first
    assert first.isActivated and first.items == ["apple"] and seen == [first]
    assert first.activations == 1 and catalog.fetches == 1
    assert (first.service, first.perspective) == ("None", "None")
    assert first.getFileName() == "None-None-%s.pub" % catalog.publishedID
    called = []
    first.callWhenActivated(called.append)  # already active: at once
    assert called == [first]

    catalog.items.append("pear")  # changed without republish: the kept copy is used
    second = pb_client(server).getRootObject().callRemote("catalog")
    assert second.isActivated  # activated at once, from the kept copy
    assert publish.whenReady(second).items == ["apple"] and catalog.fetches == 1

    catalog.republish()
    pending = pb_client(server).getRootObject().callRemoteAsync("catalog")
    third = publish.whenReady(pending, timeout=10)  # Twisted's form: the call's result
    assert isinstance(third, CatalogCopy) and third.items == ["apple", "pear"]
    assert catalog.fetches == 2


class Broken(publish.Publishable):
    def getStateToPublish(self):
        raise RuntimeError("cannot publish")


class BrokenCopy(publish.RemotePublished):
    pass


pb.setUnjellyableForClass(Broken, BrokenCopy)


def test_when_ready_raises_the_fetch_error_instead_of_waiting(pb_server, pb_client):
    root = pb_client(pb_server(Shop(Broken("broken-%s" % id(object()))))).getRootObject()
    copy = root.callRemote("catalog")
    with pytest.raises(RuntimeError, match="cannot publish"):
        publish.whenReady(copy, timeout=10)
    assert not copy.isActivated
    with pytest.raises(TypeError, match="RemotePublished"):
        publish.whenReady(object())


def test_kept_copies_are_bounded_least_recently_used_first(pb_server, pb_client, monkeypatch):
    monkeypatch.setattr(publish, "MAX_KEPT", 2)
    tag = id(object())
    catalogs = {name: Catalog(f"{name}-{tag}", [name]) for name in "abc"}

    class Shelf(pb.Root):
        def remote_get(self, name):
            return catalogs[name]

    server = pb_server(Shelf())

    def session(name):
        copy = pb_client(server).getRootObject().callRemote("get", name)
        return publish.whenReady(copy, timeout=10).items

    session("a"), session("b"), session("a")  # at the limit: both kept
    assert (catalogs["a"].fetches, catalogs["b"].fetches) == (1, 1)
    session("c")  # one past it: "b", the least recently used, is forgotten
    session("a")
    assert catalogs["a"].fetches == 1 and catalogs["c"].fetches == 1
    assert session("b") == ["b"] and catalogs["b"].fetches == 2
