"""Portal login between pbgreen and real Twisted PB, both directions (WIRE §5).

* pbgreen ``PBClient.login`` -> twisted_login_server.py, a Twisted
  ``PBServerFactory(portal)`` with ``InMemoryUsernamePasswordDatabaseDontUse``
  (alice/secret, watcher/watch) and ``AllowAnonymousAccess`` (or, with
  ``noanon``, without it). Its realm returns ``pb.Avatar`` subclasses, calls
  the client's mind while logging in, hands out a ``pb.Viewable``, and counts
  each session's ``logout`` calls, which a second connection (user
  ``watcher``) reads.
* twisted_login_client.py (``PBClientFactory.login(..., client=mind)``) ->
  a pbgreen ``PBServer(pb.Portal(realm, [pb.InMemoryPasswordChecker(...),
  pb.AllowAnonymousAccess()]))`` whose realm (``LoginRealm`` below) has the
  same methods as the Twisted one. Every Twisted client scenario was first
  checked against twisted_login_server.py.
"""

import gc
from pathlib import Path

import gevent
import pytest

import pbgreen as pb

LOGIN_CLIENT = Path(__file__).resolve().parent / "twisted_login_client.py"

TWISTED_UNAUTHORIZED = "twisted.cred.error.UnauthorizedLogin"
TWISTED_UNHANDLED = "twisted.cred.error.UnhandledCredentials"


class Mind(pb.Referenceable):
    """The ``client=`` argument of a login: the server's realm calls it."""

    def __init__(self):
        self.greets = []
        self.pings = []

    def remote_greet(self, avatarId):
        self.greets.append(avatarId)
        return ["welcome", avatarId]

    def remote_ping(self, x):
        self.pings.append(x)
        return x * 2


def alice(password=b"secret"):
    return pb.UsernamePassword(b"alice", password)


def address(twisted_server):
    return twisted_server.host, twisted_server.port


# =====================================================================================
# pbgreen client -> Twisted PBServerFactory(portal)
# =====================================================================================


@pytest.fixture
def client(twisted_login_server):
    with pb.PBClient(*address(twisted_login_server), timeout=10) as client:
        yield client


@pytest.fixture
def watcher(twisted_login_server):
    """The Twisted realm's Watcher avatar, over a connection of its own:
    ``watcher.callRemote("session", n)`` -> what happened to session n."""
    with pb.PBClient(*address(twisted_login_server), timeout=10) as client:
        yield client.login(pb.UsernamePassword(b"watcher", b"watch"))


def test_good_password_gives_a_working_avatar(client, watcher):
    mind = Mind()
    avatar = client.login(alice(), client=mind)
    assert isinstance(avatar, pb.RemoteReference)
    # perspective_whoami: Twisted's avatarId is the username as bytes.
    assert avatar.callRemote("whoami") == b"alice"
    assert avatar.callRemote("hasMind") is True
    session = avatar.callRemote("session")
    record = watcher.callRemote("session", session)
    assert record["avatarId"] == "b'alice'"
    assert record["mind"] is True
    assert record["logouts"] == 0


def test_login_releases_the_challenger(client, wait_for):
    # WIRE §5.3 step 4: the client decrefs the challenger once it answered,
    # so the Twisted broker lends only the root and the avatar.
    avatar = client.login(alice(), client=Mind())
    expected = ["AsReferenceable", "_PortalWrapper"]
    assert wait_for(lambda: avatar.callRemote("tableSize") == expected), (
        avatar.callRemote("tableSize")
    )


def test_realm_and_avatar_call_the_mind_back(client, watcher, wait_for):
    mind = Mind()
    avatar = client.login(alice(), client=mind)
    session = avatar.callRemote("session")
    # The Twisted realm called mind.greet while the login was in progress ...
    assert wait_for(lambda: mind.greets == [b"alice"]), mind.greets
    # ... and got our answer.
    assert wait_for(
        lambda: watcher.callRemote("session", session)["greeted"] == ["welcome", b"alice"]
    ), watcher.callRemote("session", session)
    # The avatar calls the mind while our own callRemote waits (a Deferred
    # answer on the Twisted side).
    assert avatar.callRemote("callMind", 21) == 42
    assert mind.pings == [21]


def test_viewable_gets_the_avatar(client):
    avatar = client.login(alice(), client=Mind())
    session = avatar.callRemote("session")
    view = avatar.callRemote("getView")
    assert isinstance(view, pb.RemoteReference)
    # view_whoSees(perspective, x): Twisted passed the pb.Avatar we logged in as.
    assert view.callRemote("whoSees", "x") == ["User", b"alice", session, "x"]


@pytest.mark.parametrize(
    "credentials",
    [alice(b"wrong"), pb.UsernamePassword(b"mallory", b"secret")],
    ids=["bad_password", "unknown_user"],
)
def test_refused_login_raises_unauthorized_login(client, credentials, wait_for):
    mind = Mind()
    with pytest.raises(pb.UnauthorizedLogin) as info:
        client.login(credentials, client=mind)
    e = info.value
    assert isinstance(e, pb.CopiedFailure)
    assert not isinstance(e, pb.UnhandledCredentials)
    assert e.type == TWISTED_UNAUTHORIZED
    assert e.trap(pb.UnauthorizedLogin) is pb.UnauthorizedLogin
    assert mind.greets == []  # the realm never saw this login
    # The connection is still good: log in properly on it.
    avatar = client.login(alice(), client=Mind())
    assert avatar.callRemote("whoami") == b"alice"
    # Neither challenger (the refused one included) stays lent to us.
    expected = ["AsReferenceable", "_PortalWrapper"]
    assert wait_for(lambda: avatar.callRemote("tableSize") == expected), (
        avatar.callRemote("tableSize")
    )


def test_anonymous_login(client, watcher, wait_for):
    mind = Mind()
    avatar = client.login(pb.Anonymous(), client=mind)
    # Twisted's anonymous avatarId is (); pbgreen's ANONYMOUS is the same.
    assert avatar.callRemote("whoami") == ()
    assert avatar.callRemote("whoami") == pb.ANONYMOUS
    assert wait_for(lambda: mind.greets == [()]), mind.greets
    assert avatar.callRemote("callMind", 5) == 10
    record = watcher.callRemote("session", avatar.callRemote("session"))
    assert record["avatarId"] == "()"
    # Without a mind the realm gets None.
    mindless = client.login(pb.Anonymous())
    assert mindless.callRemote("hasMind") is False
    assert mindless.callRemote("whoami") == ()


def test_anonymous_refused_without_anonymous_checker(twisted_login_server_noanon):
    with pb.PBClient(*address(twisted_login_server_noanon), timeout=10) as client:
        with pytest.raises(pb.UnhandledCredentials) as info:
            client.login(pb.Anonymous(), client=Mind())
        e = info.value
        assert isinstance(e, pb.CopiedFailure)
        assert e.type == TWISTED_UNHANDLED
        assert "IAnonymous" in e.getErrorMessage()
        avatar = client.login(alice())
        assert avatar.callRemote("whoami") == b"alice"


def test_concurrent_logins_on_one_connection(client):
    logins = [
        gevent.spawn(client.login, alice(), client=Mind()),
        gevent.spawn(client.login, pb.Anonymous(), client=Mind()),
        gevent.spawn(client.login, alice(b"wrong")),
    ]
    try:
        gevent.joinall(logins, timeout=20)
    finally:
        gevent.killall(logins)  # only ever kills a login that hung
    first, second, third = logins
    assert first.successful() and second.successful(), (first.exception, second.exception)
    assert isinstance(third.exception, pb.UnauthorizedLogin)
    assert first.value.callRemote("whoami") == b"alice"
    assert second.value.callRemote("whoami") == ()


def test_logout_when_avatar_is_dropped(twisted_login_server, watcher, wait_for):
    client = pb.PBClient(*address(twisted_login_server), timeout=10)
    try:
        avatar = client.login(alice(), client=Mind())
        session = avatar.callRemote("session")
        keeper = client.login(pb.Anonymous())  # held until the disconnect
        keeper_session = keeper.callRemote("session")
        assert watcher.callRemote("session", session)["logouts"] == 0

        del avatar
        gc.collect()  # -> ['decref', luid] -> Twisted runs maybeLogout
        assert wait_for(
            lambda: watcher.callRemote("session", session)["logouts"] == 1
        ), watcher.callRemote("session", session)
        assert keeper.callRemote("whoami") == ()  # the connection is fine
    finally:
        client.close()
    # On disconnect only the avatar still held logs out; the dropped one
    # does not log out a second time.
    assert wait_for(
        lambda: watcher.callRemote("session", keeper_session)["logouts"] == 1
    ), watcher.callRemote("session", keeper_session)
    assert watcher.callRemote("session", session)["logouts"] == 1


def test_logout_on_disconnect(twisted_login_server, watcher, wait_for):
    client = pb.PBClient(*address(twisted_login_server), timeout=10)
    avatar = client.login(alice(), client=Mind())
    session = avatar.callRemote("session")
    assert watcher.callRemote("session", session)["logouts"] == 0
    client.close()
    assert wait_for(
        lambda: watcher.callRemote("session", session)["logouts"] == 1
    ), watcher.callRemote("session", session)
    with pytest.raises(pb.DeadReferenceError):
        avatar.callRemote("whoami")


# =====================================================================================
# Twisted PBClientFactory.login -> pbgreen PBServer(pb.Portal(...))
# =====================================================================================


class LoginView(pb.Viewable):
    def __init__(self):
        self.seen = []  # the perspectives view_whoSees was given

    def view_whoSees(self, perspective, x):
        self.seen.append(perspective)
        return [type(perspective).__name__, perspective.avatarId, perspective.session, x]


class LoginAvatar(pb.Avatar):
    def __init__(self, realm, avatarId, mind, session):
        self.realm = realm
        self.avatarId = avatarId
        self.mind = mind
        self.session = session

    def perspective_whoami(self):
        return self.avatarId

    def perspective_session(self):
        return self.session

    def perspective_hasMind(self):
        return self.mind is not None

    def perspective_callMind(self, x):
        # Blocks this call's greenlet until the Twisted client's mind answers.
        return self.mind.callRemote("ping", x)

    def perspective_getView(self):
        return self.realm.view

    def perspective_logouts(self, session):
        return len(self.realm.sessions[session]["logouts"])


class LoginRealm:
    """The pbgreen twin of twisted_login_server.py's realm."""

    def __init__(self):
        self.sessions = {}  # session number -> record
        self.avatars = {}  # session number -> LoginAvatar
        self.view = LoginView()

    def requestAvatar(self, avatarId, mind, *interfaces):
        session = len(self.sessions) + 1
        record = {
            "avatarId": avatarId,
            "interfaces": interfaces,
            "mind": mind,
            "greeted": None,
            "logouts": [],
        }
        self.sessions[session] = record
        avatar = LoginAvatar(self, avatarId, mind, session)
        self.avatars[session] = avatar
        if mind is not None:
            # A blocking call back to the client while it waits for its login.
            record["greeted"] = mind.callRemote("greet", avatarId)

        def logout():
            record["logouts"].append(session)

        return interfaces[0], avatar, logout

    def logouts(self, session):
        return len(self.sessions[session]["logouts"])


def portal_for(realm, anonymous=True):
    checkers = [pb.InMemoryPasswordChecker(alice=b"secret")]
    if anonymous:
        checkers.append(pb.AllowAnonymousAccess())
    return pb.Portal(realm, checkers)


@pytest.fixture
def realm():
    return LoginRealm()


@pytest.fixture
def portal_server(serve_pbgreen, realm):
    return serve_pbgreen(portal_for(realm))


@pytest.fixture
def login_scenario(portal_server, twisted_client):
    """login_scenario(name, server=portal_server) -> the JSON result of
    twisted_login_client.py's scenario ``name`` against ``server``."""

    def run(name, server=None):
        host, port = (server or portal_server).address
        return twisted_client(name, host, port, script=LOGIN_CLIENT).result()

    return run


def no_connections(server):
    return lambda: not server.connections


def test_twisted_logs_in_with_good_password(login_scenario, realm):
    result = login_scenario("good")
    assert result == {
        "is_remote_reference": True,
        "whoami": "b'alice'",
        "session": 1,
        "callMind": 42,
        "greets": ["b'alice'"],
        "pings": [21],
        "view_is_remote_reference": True,
        "whoSees": ["'LoginAvatar'", "b'alice'", "1", "'x'"],
    }
    (record,) = realm.sessions.values()
    assert record["avatarId"] == b"alice"
    assert record["interfaces"] == (pb.IPerspective,)
    assert isinstance(record["mind"], pb.RemoteReference)
    # The realm's blocking call to the mind returned the Twisted answer.
    assert record["greeted"] == ["welcome", b"alice"]
    # view_whoSees got the very avatar the client logged in as.
    assert realm.view.seen == [realm.avatars[1]]


@pytest.mark.parametrize("scenario", ["badpass", "unknown"])
def test_twisted_login_refused(login_scenario, realm, scenario):
    result = login_scenario(scenario)
    assert result["kind"] == "err"
    assert result["is_copied"] is True
    # pbgreen names its own class (API.md: Twisted's equivalent is among the
    # parents), so what counts is that check() works.
    assert result["type"] in (
        repr(TWISTED_UNAUTHORIZED.encode()),
        repr(b"pbgreen.errors.UnauthorizedLogin"),
    )
    # failure.check(UnauthorizedLogin) works on the Twisted side ...
    assert result["check_unauthorized"] is True
    assert result["check_unhandled"] is False
    # ... and so does its base class, as with a Twisted server (WIRE §5.1:
    # parents UnauthorizedLogin, LoginFailed, Unauthorized, Exception, ...).
    assert result["check_login_failed"] is True
    # The connection stays usable: the good login after it worked.
    assert result["after"] == "b'alice'"
    # The realm only saw the good login.
    assert [r["avatarId"] for r in realm.sessions.values()] == [b"alice"]


def test_twisted_anonymous_login(login_scenario, realm):
    result = login_scenario("anonymous")
    assert result == {
        "is_remote_reference": True,
        "whoami": "()",
        "session": 1,
        "callMind": 42,
        "greets": ["()"],
        "pings": [21],
    }
    (record,) = realm.sessions.values()
    assert record["avatarId"] == pb.ANONYMOUS
    assert record["greeted"] == ["welcome", ()]


def test_twisted_avatar_drop_logs_out_once(login_scenario, realm, portal_server, wait_for):
    result = login_scenario("drop")
    assert result == {
        "session": 1,
        "observer_session": 2,
        "before": 0,
        "logged_out": True,
        "after": 1,
    }
    # The client has exited: the observer logs out on disconnect, the
    # dropped avatar does not log out again.
    assert wait_for(lambda: realm.logouts(2) == 1), realm.sessions
    assert wait_for(no_connections(portal_server))
    assert realm.logouts(1) == 1
    assert realm.logouts(2) == 1


def test_twisted_disconnect_logs_out_once(login_scenario, realm, portal_server, wait_for):
    result = login_scenario("disconnect")
    assert result == {"session": 1, "logouts": 0}
    assert wait_for(lambda: realm.logouts(1) >= 1), realm.sessions
    assert wait_for(no_connections(portal_server))
    assert realm.logouts(1) == 1


def test_twisted_anonymous_unhandled_without_anonymous_checker(
    login_scenario, serve_pbgreen, realm
):
    server = serve_pbgreen(portal_for(realm, anonymous=False))
    result = login_scenario("unhandled", server=server)
    assert result["kind"] == "err"
    assert result["is_copied"] is True
    assert result["type"] in (
        repr(TWISTED_UNHANDLED.encode()),
        repr(b"pbgreen.errors.UnhandledCredentials"),
    )
    assert result["check_unhandled"] is True
    assert result["check_login_failed"] is True
    assert result["after"] == "b'alice'"
    assert [r["avatarId"] for r in realm.sessions.values()] == [b"alice"]


def test_twisted_unhandled_is_not_unauthorized(login_scenario, serve_pbgreen, realm):
    # In twisted.cred, UnhandledCredentials (no checker for this kind of
    # credentials: a server configuration problem) is a LoginFailed but not
    # an UnauthorizedLogin (wrong user or password); a Twisted client that
    # traps UnauthorizedLogin must not mistake one for the other.
    server = serve_pbgreen(portal_for(realm, anonymous=False))
    result = login_scenario("unhandled", server=server)
    assert result["check_unhandled"] is True
    assert result["check_unauthorized"] is False
