"""A real Twisted PB login server: the peer for pbgreen's client-side login tests.

Usage: python twisted_login_server.py [noanon]

Serves ``pb.PBServerFactory(portal)`` on 127.0.0.1, port 0, and prints
``PORT <n>`` as its first stdout line. Exits when stdin is closed or on
SIGTERM. Twisted's log goes to stderr.

The portal's checkers are ``InMemoryUsernamePasswordDatabaseDontUse`` (users
``alice``/``secret`` and ``watcher``/``watch``) and, unless ``noanon`` is
given, ``AllowAnonymousAccess``. The realm gives each login a *session*
number and records what happens to it in ``SESSIONS``:

* ``User`` (every avatar id except ``watcher``) is a ``pb.Avatar`` with
  ``perspective_*`` methods; the realm calls the client's mind
  (``mind.callRemote("greet", avatarId)``) as soon as it makes the avatar;
  ``perspective_getView`` returns a ``pb.Viewable`` whose ``view_whoSees``
  reports the perspective it was given.
  ``perspective_logouts(n)`` tells how often session ``n`` logged out.
* ``Watcher`` (user ``watcher``) reports any session by number, so a test
  can watch ``logout`` run from a second connection.

twisted_login_client.py's scenarios run against this server as well as
against the pbgreen realm in test_login_interop.py.
"""

import gc
import sys

from twisted.cred import checkers, portal
from twisted.internet import reactor
from twisted.python import log
from twisted.spread import pb
from zope.interface import implementer

from twisted_common import stop_when_stdin_closes

#: session number -> what happened to that login (JSON-able facts)
SESSIONS = {}


class View(pb.Viewable):
    def view_whoSees(self, perspective, x):
        # Twisted passes the perspective (the avatar) the view was sent to.
        return [
            type(perspective).__name__,
            perspective.avatarId,
            perspective.session,
            x,
        ]


class User(pb.Avatar):
    def __init__(self, avatarId, mind, session):
        self.avatarId = avatarId
        self.mind = mind
        self.session = session
        self.view = View()

    def perspective_whoami(self):
        return self.avatarId

    def perspective_session(self):
        return self.session

    def perspective_hasMind(self):
        return self.mind is not None

    def perspective_callMind(self, x):
        # A Deferred: the answer goes out once the client's mind answered.
        return self.mind.callRemote("ping", x)

    def perspective_getView(self):
        return self.view

    def perspective_logouts(self, number):
        return SESSIONS[number]["logouts"]

    def perspective_tableSize(self):
        """How many objects this connection's broker lends the client
        (root, this avatar, ... but not the login challenger once dropped)."""
        gc.collect()
        broker = self.mind.broker
        return sorted(type(local.object).__name__ for local in broker.localObjects.values())

    def logout(self):
        SESSIONS[self.session]["logouts"] += 1


class Watcher(pb.Avatar):
    def perspective_session(self, number):
        return dict(SESSIONS[number])


@implementer(portal.IRealm)
class Realm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        assert pb.IPerspective in interfaces
        if avatarId == b"watcher":
            return pb.IPerspective, Watcher(), lambda: None
        number = len(SESSIONS) + 1
        SESSIONS[number] = {
            "avatarId": repr(avatarId),
            "logouts": 0,
            "mind": mind is not None,
            "greeted": None,
        }
        avatar = User(avatarId, mind, number)
        if mind is not None:
            # Call the client back while its login is still in progress.
            def greeted(answer):
                SESSIONS[number]["greeted"] = answer

            def failed(f):
                SESSIONS[number]["greeted"] = "error: %s" % f.getErrorMessage()

            mind.callRemote("greet", avatarId).addCallbacks(greeted, failed)
        return pb.IPerspective, avatar, avatar.logout


def main(argv):
    log.startLogging(sys.stderr, setStdout=False)
    users = checkers.InMemoryUsernamePasswordDatabaseDontUse(
        alice=b"secret", watcher=b"watch"
    )
    the_checkers = [users]
    if "noanon" not in argv[1:]:
        the_checkers.append(checkers.AllowAnonymousAccess())
    the_portal = portal.Portal(Realm(), the_checkers)
    port = reactor.listenTCP(0, pb.PBServerFactory(the_portal), interface="127.0.0.1")
    sys.stdout.write("PORT %d\n" % port.getHost().port)
    sys.stdout.flush()
    stop_when_stdin_closes()
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
