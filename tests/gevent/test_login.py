"""Portal login, avatars, viewables and perspectives over real sockets."""

from __future__ import annotations

import gc
import weakref

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
        self.disconnected = gevent.event.Event()  # set when a mind's connection goes

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert interfaces[0] is pb.IPerspective
        avatar = User(avatar_id, mind, self)
        self.avatars.append(avatar)
        if mind is not None:
            mind.notifyOnDisconnect(lambda ref: self.disconnected.set())
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


@pytest.fixture
def portal_roots(monkeypatch):
    """What each connection's portal root handed out, through the root's own PB methods.

    ``portal_roots.roots``: the root of each connection (``pb.cred.PortalRoot``,
    one per connection, made by ``rootObject`` as Twisted's are);
    ``portal_roots.challengers``: weakrefs to the objects ``login`` returned
    for the client to answer its challenge to.
    """
    record = type("Record", (), {})()
    record.roots, record.challengers = [], []
    root_object = pb.cred.PortalRoot.rootObject
    remote_login = pb.cred.PortalRoot.remote_login

    def recording_root_object(self, connection):
        root = root_object(self, connection)
        record.roots.append(root)
        return root

    def recording_remote_login(self, username):
        challenge, challenger = remote_login(self, username)
        record.challengers.append(weakref.ref(challenger))
        return challenge, challenger
    monkeypatch.setattr(pb.cred.PortalRoot, "rootObject", recording_root_object)
    monkeypatch.setattr(pb.cred.PortalRoot, "remote_login", recording_remote_login)
    return record


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
def test_refused_login_raises_unauthorized_and_leaves_nothing(portal_roots, server, pb_client,
                                                              user, password, realm, wait_until):
    client = pb_client(server)
    with pytest.raises(pb.UnauthorizedLogin) as info:
        client.login(pb.UsernamePassword(user, password))
    assert isinstance(info.value, pb.CopiedFailure)
    assert "twisted.cred.error.UnauthorizedLogin" in info.value.parents
    assert realm.avatars == []
    assert client.login(pb.UsernamePassword(b"alice", b"secret")).callRemote("whoami") == b"alice"
    # The refused login's challenger is let go. (Checked after more traffic:
    # test_calls.py::test_a_released_object_is_not_kept_alive_by_the_last_call_it_received
    # covers an object released while the connection stays quiet.)
    refused = portal_roots.challengers[0]
    wait_until(lambda: refused() is None,
               message="the server still holds the refused login's challenger")


def test_anonymous_login(server, pb_client):
    anonymous = pb_client(server).login(pb.Anonymous())
    assert anonymous.callRemote("whoami") == pb.ANONYMOUS


def test_anonymous_refused_without_an_anonymous_checker(pb_server, pb_client, realm):
    server = pb_server(pb.Portal(realm, [pb.InMemoryPasswordChecker(alice=b"secret")]))
    with pytest.raises(pb.UnhandledCredentials):
        pb_client(server).login(pb.Anonymous())


def test_logout_once_when_the_avatar_is_dropped(server, pb_client, realm, wait_until):
    client = pb_client(server)
    avatar = client.login(pb.UsernamePassword(b"alice", b"secret"), client=Mind())
    assert avatar.callRemote("whoami") == b"alice"
    del avatar
    wait_until(lambda: realm.logouts, message="no logout")
    client.close()
    # the server has seen the disconnect, when a second logout would run
    assert realm.disconnected.wait(5)
    assert realm.logouts == [b"alice"]


def test_logout_once_on_disconnect(server, pb_client, realm, wait_until):
    client = pb_client(server)
    avatar = client.login(pb.UsernamePassword(b"alice", b"secret"), client=Mind())
    assert avatar.callRemote("whoami") == b"alice"
    client.close()
    wait_until(lambda: realm.logouts, message="no logout")
    assert realm.disconnected.wait(5)
    del avatar  # on a closed connection: nothing may reach the server
    gc.collect()
    assert realm.logouts == [b"alice"]


def test_a_client_cannot_reach_objects_it_was_not_given(server, pb_client):
    alice_client = pb_client(server)
    alice = alice_client.login(pb.UsernamePassword(b"alice", b"secret"))
    bob_client = pb_client(server)
    bob = bob_client.login(pb.UsernamePassword(b"bob", b"hunter2"))
    for luid in range(0, 40):
        if luid == bob.luid:
            continue
        forged = pb.RemoteReference(bob.broker, luid)
        with pytest.raises(pb.Error, match="Invalid Object ID"):
            forged.callRemote("whoami")
    # alice's avatar id on her own connection means nothing on bob's: it
    # reaches nothing, or bob's own avatar if the numbers happen to match
    forged = pb.RemoteReference(bob.broker, alice.luid)
    try:
        answer = forged.callRemote("whoami")
    except pb.Error as exc:
        assert "Invalid Object ID" in str(exc)
    else:
        assert answer == b"bob"
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


def test_each_refusal_makes_the_next_attempt_on_that_connection_wait(portal_roots, server,
                                                                    pb_client):
    client = pb_client(server)
    (root,) = portal_roots.roots  # PortalRoot.penalty: its documented attribute
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
