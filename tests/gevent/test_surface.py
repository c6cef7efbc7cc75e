"""Twisted PB names that docs/porting.md lists as provided and no other test shows.

Each test shows one name doing what its Twisted namesake does (see the table
"The whole surface, name by name" in docs/porting.md).
"""

from __future__ import annotations

import inspect

import pytest

import pbgreen as pb
from pbgreen import banana, cred
from pbgreen.flavors import AsReferenceable, Serializable
from pbgreen.jelly import Jellyable, globalSecurity
from pbgreen.reference import RemoteCacheObserver


def test_respond_gives_twisteds_answer_to_a_challenge():
    # Computed once with Twisted 26.10: twisted.spread.pb.respond(challenge, password).
    twisted_answer = b"\xfbeJ\xadP0:&\xb59\x85\x8a\xfb\x96\x9f'"
    assert cred.respond(b"0123456789abcdef", b"secret") == twisted_answer
    assert cred.respond(b"0123456789abcdef", b"Secret") != twisted_answer


def test_challenge_is_sixteen_fresh_bytes():
    challenges = {cred.challenge() for _ in range(20)}
    assert len(challenges) == 20
    assert all(isinstance(c, bytes) and len(c) == 16 for c in challenges)


def test_portno_is_pbs_port_and_the_servers_default():
    assert pb.portno == 8787
    assert inspect.signature(pb.PBServer).parameters["port"].default == pb.portno
    assert inspect.signature(pb.PBClient).parameters["port"].default == pb.portno


def test_banana_type_bytes_are_twisteds():
    # Twisted's constants are the same values as one-byte strings (b"\x80" ...).
    assert (banana.LIST, banana.INT, banana.STRING, banana.NEG, banana.FLOAT,
            banana.LONGINT, banana.LONGNEG, banana.VOCAB_TYPE) == tuple(range(0x80, 0x88))
    assert banana.encode(1.5)[0] == banana.FLOAT
    assert banana.encode(-3)[-1] == banana.NEG
    assert banana.encode(2**70)[-1] == banana.LONGINT


def test_every_flavor_is_a_serializable():
    assert issubclass(Serializable, Jellyable)
    for flavor in (pb.Referenceable, pb.Root, pb.Viewable, pb.Avatar, pb.Copyable,
                   pb.Cacheable):
        assert issubclass(flavor, Serializable)


class Sample(pb.Copyable):
    def __init__(self, size):
        self.size = size

    def getTypeToCopy(self):
        return "test_surface.Sample"


class Sizes(pb.Root):
    def remote_sample(self, size):
        return Sample(size)


def test_module_registrations_go_to_global_security(pb_server, pb_client):
    made = []

    def build(state):
        made.append(state)
        return ("built", state["size"])

    pb.setUnjellyableFactoryForClass("test_surface.Sample", build)
    assert globalSecurity.unjellyableFor(b"test_surface.Sample") is not None
    ref = pb_client(pb_server(Sizes())).getRootObject()
    assert ref.callRemote("sample", 7) == ("built", 7)   # the factory made it
    assert made == [{"size": 7}]


class Gauge(pb.Cacheable):
    def __init__(self):
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"level": 1}


class GaugeCopy(pb.RemoteCache):
    def observe_level(self, level):
        self.level = level


pb.setUnjellyableForClass(Gauge, GaugeCopy)


class GaugeRoot(pb.Root):
    def __init__(self):
        self.gauge = Gauge()

    def remote_gauge(self):
        return self.gauge

    def remote_set(self, level):
        for observer in self.gauge.observers:
            observer.callRemote("level", level)


def test_cache_observers_are_remote_cache_observers(pb_server, pb_client):
    root = GaugeRoot()
    ref = pb_client(pb_server(root)).getRootObject()
    copy = ref.callRemote("gauge")
    assert copy.level == 1
    [observer] = root.gauge.observers
    assert isinstance(observer, RemoteCacheObserver)
    ref.callRemote("set", 5)   # the update is written before this answer
    assert copy.level == 5


class Counter:
    """Not a flavor: reachable only through AsReferenceable."""

    def __init__(self):
        self.count = 0

    def view_bump(self):
        self.count += 1
        return self.count


class PerConnection(pb.Root):
    """Each connection gets a root of its own: a Counter wrapped for view_ calls."""

    def rootObject(self, connection):
        return AsReferenceable(Counter(), "view")


def test_root_object_per_connection_and_as_referenceable(pb_server, pb_client):
    server = pb_server(PerConnection())
    first = pb_client(server).getRootObject()
    second = pb_client(server).getRootObject()
    assert [first.callRemote("bump"), first.callRemote("bump")] == [1, 2]
    assert second.callRemote("bump") == 1   # its own Counter


class RefusingRealm:
    """docs/porting.md, step 4: a realm refuses a user by raising UnauthorizedLogin."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        if avatarId == b"banned":
            raise pb.UnauthorizedLogin("banned users stay out")
        return pb.IPerspective, pb.Avatar(), lambda: None


def test_a_realm_refuses_a_user_with_unauthorized_login(pb_server, pb_client):
    checker = pb.InMemoryPasswordChecker(banned=b"pw", welcome=b"pw")
    server = pb_server(pb.Portal(RefusingRealm(), [checker]))
    client = pb_client(server)
    with pytest.raises(pb.UnauthorizedLogin):
        client.login(pb.UsernamePassword(b"banned", b"pw"))
    assert isinstance(client.login(pb.UsernamePassword(b"welcome", b"pw")), pb.RemoteReference)


def test_credentials_must_be_bytes():
    with pytest.raises(TypeError, match="bytes"):
        pb.UsernamePassword("user1", "pass1")


def test_encode_b128_writes_twisteds_int2b128_digits():
    # What Twisted 26.10's banana.int2b128 writes for these numbers.
    assert banana.encode_b128(0) == b"\x00"
    assert banana.encode_b128(300) == b",\x02"
    assert banana.encode_b128(2**21) == b"\x00\x00\x00\x01"


class PlainTextChecker:
    """A checker of our own for PB logins: it receives UsernameHashedPassword."""

    credentialInterfaces = (cred.UsernameHashedPassword,)

    def __init__(self, passwords):
        self.passwords = passwords
        self.seen = []

    def requestAvatarId(self, credentials):
        self.seen.append(type(credentials))
        stored = self.passwords.get(credentials.username)
        if stored is None or not credentials.checkPassword(stored):
            raise pb.UnauthorizedLogin()
        return credentials.username


class NamingRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        avatar = pb.Avatar()
        avatar.perspective_name = lambda: avatarId
        return pb.IPerspective, avatar, lambda: None


def test_a_checker_of_hashed_passwords_and_login_failed_as_the_base(pb_server, pb_client):
    checker = PlainTextChecker({b"carol": b"s3cret"})
    client = pb_client(pb_server(pb.Portal(NamingRealm(), [checker])))
    with pytest.raises(pb.LoginFailed):    # UnauthorizedLogin is a LoginFailed
        client.login(pb.UsernamePassword(b"carol", b"guess"))
    avatar = client.login(pb.UsernamePassword(b"carol", b"s3cret"))
    assert avatar.callRemote("name") == b"carol"
    assert checker.seen == [cred.UsernameHashedPassword] * 2
