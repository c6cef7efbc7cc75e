"""Portal login, avatars, viewables and perspectives over real sockets."""

from __future__ import annotations

import gc

import gevent
import pytest

import pbgreen as pb


class Note(pb.Copyable):
    def getStateToCopyFor(self, perspective):
        return {"for": perspective.name}


class NoteCopy(pb.RemoteCopy):
    pass


pb.setUnjellyableForClass(Note, NoteCopy)


class Board(pb.Viewable):
    def view_whoSees(self, avatar, text):
        return [avatar.name, text]


class User(pb.Avatar):
    def __init__(self, name, mind, realm):
        self.name, self.mind, self.realm = name, mind, realm

    def perspective_whoami(self):
        return self.name

    def perspective_poke(self):
        return self.mind.callRemote("hello", self.name)

    def perspective_board(self):
        return self.realm.board

    def perspective_note(self):
        return Note()


class Realm:
    def __init__(self):
        self.board = Board()
        self.logouts = []
        self.avatars = []

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert interfaces[0] is pb.IPerspective
        avatar = User(avatar_id, mind, self)
        self.avatars.append(avatar)
        return interfaces[0], avatar, lambda: self.logouts.append(avatar_id)


class Mind(pb.Referenceable):
    def remote_hello(self, name):
        return b"hi " + name


@pytest.fixture
def realm():
    return Realm()


@pytest.fixture
def server(pb_server, realm):
    checker = pb.InMemoryPasswordChecker(alice=b"secret")
    checker.addUser(b"bob", b"hunter2")
    return pb_server(pb.Portal(realm, [checker, pb.AllowAnonymousAccess()]))


def wait_for(condition, seconds=5):
    with gevent.Timeout(seconds):
        while not condition():
            gc.collect()
            gevent.sleep(0.01)


def test_login_reaches_perspective_methods_and_the_mind(server, pb_client, realm):
    avatar = pb_client(server).login(pb.UsernamePassword(b"alice", b"secret"), client=Mind())
    assert avatar.callRemote("whoami") == b"alice"
    assert avatar.callRemote("poke") == b"hi alice"


def test_viewable_gets_the_calling_avatar(server, pb_client):
    alice = pb_client(server).login(pb.UsernamePassword(b"alice", b"secret"))
    bob = pb_client(server).login(pb.UsernamePassword(b"bob", b"hunter2"))
    assert alice.callRemote("board").callRemote("whoSees", "x") == [b"alice", "x"]
    assert bob.callRemote("board").callRemote("whoSees", "y") == [b"bob", "y"]


def test_copy_state_is_chosen_for_the_avatar(server, pb_client):
    bob = pb_client(server).login(pb.UsernamePassword(b"bob", b"hunter2"))
    assert getattr(bob.callRemote("note"), "for") == b"bob"


@pytest.mark.parametrize("user,password", [(b"alice", b"wrong"), (b"mallory", b"secret")])
def test_refused_login_raises_unauthorized_and_leaves_nothing(server, pb_client, user, password,
                                                               realm):
    client = pb_client(server)
    with pytest.raises(pb.UnauthorizedLogin) as info:
        client.login(pb.UsernamePassword(user, password))
    assert isinstance(info.value, pb.CopiedFailure)
    assert "twisted.cred.error.UnauthorizedLogin" in info.value.parents
    connection = next(iter(server.connections))
    wait_for(lambda: set(connection.protocol.local_objects) == {b"root"})
    assert realm.avatars == []
    assert client.login(pb.UsernamePassword(b"alice", b"secret")).callRemote("whoami") == b"alice"


def test_anonymous_login(server, pb_client):
    anonymous = pb_client(server).login(pb.Anonymous())
    assert anonymous.callRemote("whoami") == pb.ANONYMOUS


def test_anonymous_refused_without_an_anonymous_checker(pb_server, pb_client, realm):
    server = pb_server(pb.Portal(realm, [pb.InMemoryPasswordChecker(alice=b"secret")]))
    with pytest.raises(pb.UnhandledCredentials):
        pb_client(server).login(pb.Anonymous())


def test_logout_once_when_the_avatar_is_dropped(server, pb_client, realm):
    client = pb_client(server)
    avatar = client.login(pb.UsernamePassword(b"alice", b"secret"))
    assert avatar.callRemote("whoami") == b"alice"
    del avatar
    wait_for(lambda: realm.logouts == [b"alice"])
    client.close()
    gevent.sleep(0.05)
    assert realm.logouts == [b"alice"]


def test_logout_once_on_disconnect(server, pb_client, realm):
    client = pb_client(server)
    avatar = client.login(pb.UsernamePassword(b"alice", b"secret"))
    assert avatar.callRemote("whoami") == b"alice"
    client.close()
    wait_for(lambda: realm.logouts == [b"alice"])
    del avatar
    gc.collect()
    gevent.sleep(0.05)
    assert realm.logouts == [b"alice"]


def test_a_client_cannot_reach_objects_it_was_not_given(server, pb_client):
    alice_client = pb_client(server)
    alice = alice_client.login(pb.UsernamePassword(b"alice", b"secret"))
    bob_client = pb_client(server)
    bob = bob_client.login(pb.UsernamePassword(b"bob", b"hunter2"))
    for luid in range(0, 40):
        if luid == bob.luid:
            continue
        forged = pb.RemoteReference(bob_client.connection, luid)
        with pytest.raises(pb.Error, match="Invalid Object ID"):
            forged.callRemote("whoami")
    # alice's avatar id on her own connection means nothing on bob's
    forged = pb.RemoteReference(bob_client.connection, alice.luid)
    try:
        assert forged.callRemote("whoami") == b"bob"
    except pb.Error as exc:
        assert "Invalid Object ID" in str(exc)
    assert alice.callRemote("whoami") == b"alice"


@pytest.fixture
def quick_penalty(monkeypatch):
    monkeypatch.setattr(pb.cred.PortalRoot, "first_penalty", 0.001)
    monkeypatch.setattr(pb.cred.PortalRoot, "max_penalty", 0.004)


def test_failed_logins_do_not_starve_other_clients(server, pb_client, quick_penalty):
    attacker = pb_client(server)
    bystander = pb_client(server).login(pb.UsernamePassword(b"bob", b"hunter2"))

    def hammer():
        for _ in range(30):
            with pytest.raises(pb.UnauthorizedLogin):
                attacker.login(pb.UsernamePassword(b"alice", b"guess"))
    job = gevent.spawn(hammer)
    answers = [bystander.callRemote("whoami") for _ in range(50)]
    job.join(timeout=30)
    assert job.successful(), job.exception
    assert answers == [b"bob"] * 50


def test_each_refusal_makes_the_next_attempt_on_that_connection_wait(server, pb_client):
    client = pb_client(server)
    root = next(iter(server.connections)).protocol.local_objects[b"root"].object
    penalties = []
    for _ in range(3):
        with pytest.raises(pb.UnauthorizedLogin):
            client.login(pb.UsernamePassword(b"alice", b"guess"))
        penalties.append(root.penalty)
    assert penalties == [0.05, 0.1, 0.2]
    # guesses sent all at once still take turns, each a penalty apart
    jobs = [gevent.spawn(client.login, pb.UsernamePassword(b"alice", b"guess"))
            for _ in range(3)]
    gevent.joinall(jobs, timeout=10)
    assert all(isinstance(job.exception, pb.UnauthorizedLogin) for job in jobs)
    assert root.penalty == 1.6
    other = pb_client(server)  # another connection is not slowed down
    assert other.login(pb.UsernamePassword(b"bob", b"hunter2")).callRemote("whoami") == b"bob"
    root.penalty = 0.0
    client.login(pb.UsernamePassword(b"alice", b"secret"))
    assert root.penalty == 0.0
