"""A real Twisted PB client that logs in: the peer for pbgreen's portal tests.

Usage: python twisted_login_client.py SCENARIO HOST PORT

Connects with ``pb.PBClientFactory``, runs one login scenario through
``factory.login(credentials, client=mind)`` and prints its results as one
JSON line on stdout, then exits 0 (disconnecting). On any failure (including
the scenario's own deadline) it prints the reason on stderr and exits 1.

The avatars it talks to have ``perspective_whoami``, ``session``,
``callMind(x)`` (the server calls ``mind.callRemote("ping", x)``),
``getView`` (a Viewable with ``view_whoSees``) and ``logouts(session)``;
the realm calls ``mind.callRemote("greet", avatarId)`` while it makes the
avatar. The pbgreen realm in test_login_interop.py implements exactly that.
"""

import gc
import sys

from twisted.cred import credentials, error
from twisted.internet import defer, reactor, task
from twisted.spread import pb

from twisted_common import run_scenario

DEADLINE = 20.0  # seconds for a whole scenario

#: avatars the disconnect scenario keeps until the process exits
KEPT = []


class Mind(pb.Referenceable):
    """What the client hands the realm as ``client=``: the server calls it."""

    def __init__(self):
        self.greets = []
        self.pings = []

    def remote_greet(self, avatarId):
        self.greets.append(avatarId)
        return ["welcome", avatarId]

    def remote_ping(self, x):
        self.pings.append(x)
        return x * 2


def outcome(d):
    """A Deferred firing with ("ok", result) or ("err", failure)."""
    return d.addCallbacks(lambda r: ("ok", r), lambda f: ("err", f))


@defer.inlineCallbacks
def poll(check, deadline=10.0, interval=0.02):
    """Call check() (may return a Deferred) until it is true or time is up."""
    end = reactor.seconds() + deadline
    while True:
        if (yield check()):
            return True
        if reactor.seconds() > end:
            return False
        yield task.deferLater(reactor, interval, lambda: None)


def refusal_report(kind, f):
    if kind != "err":
        return {"kind": kind, "value": repr(f)}
    return {
        "kind": kind,
        "type": repr(f.type),
        "message": f.getErrorMessage(),
        "is_copied": isinstance(f, pb.CopiedFailure),
        "check_unauthorized": f.check(error.UnauthorizedLogin) is error.UnauthorizedLogin,
        "check_unhandled": f.check(error.UnhandledCredentials) is error.UnhandledCredentials,
        "check_login_failed": f.check(error.LoginFailed) is error.LoginFailed,
    }


def alice(password=b"secret"):
    return credentials.UsernamePassword(b"alice", password)


@defer.inlineCallbacks
def logged_in_report(avatar, mind):
    """What a fresh avatar of the pbgreen realm tells and does."""
    return {
        "is_remote_reference": isinstance(avatar, pb.RemoteReference),
        "whoami": repr((yield avatar.callRemote("whoami"))),
        "session": (yield avatar.callRemote("session")),
        "callMind": (yield avatar.callRemote("callMind", 21)),
        "greets": [repr(g) for g in mind.greets],
        "pings": mind.pings,
    }


# --- scenarios ----------------------------------------------------------------


@defer.inlineCallbacks
def scenario_good(factory):
    mind = Mind()
    avatar = yield factory.login(alice(), client=mind)
    report = yield logged_in_report(avatar, mind)
    view = yield avatar.callRemote("getView")
    report["view_is_remote_reference"] = isinstance(view, pb.RemoteReference)
    sees = yield view.callRemote("whoSees", "x")
    report["whoSees"] = [repr(v) for v in sees]
    return report


@defer.inlineCallbacks
def refused(factory, creds):
    kind, f = yield outcome(factory.login(creds, client=Mind()))
    report = refusal_report(kind, f)
    # A refused login leaves the connection usable: log in properly now.
    mind = Mind()
    avatar = yield factory.login(alice(), client=mind)
    report["after"] = repr((yield avatar.callRemote("whoami")))
    return report


def scenario_badpass(factory):
    return refused(factory, alice(b"wrong"))


def scenario_unknown(factory):
    return refused(factory, credentials.UsernamePassword(b"mallory", b"secret"))


@defer.inlineCallbacks
def scenario_anonymous(factory):
    mind = Mind()
    avatar = yield factory.login(credentials.Anonymous(), client=mind)
    return (yield logged_in_report(avatar, mind))


@defer.inlineCallbacks
def scenario_drop(factory):
    mind = Mind()
    avatar = yield factory.login(alice(), client=mind)
    session = yield avatar.callRemote("session")
    # A second login on the same connection watches the first one's logout.
    observer = yield factory.login(credentials.Anonymous())
    before = yield observer.callRemote("logouts", session)
    del avatar
    gc.collect()  # -> ['decref', avatar luid] -> the server runs logout
    logged_out = yield poll(
        lambda: observer.callRemote("logouts", session).addCallback(lambda n: n >= 1)
    )
    return {
        "session": session,
        "observer_session": (yield observer.callRemote("session")),
        "before": before,
        "logged_out": logged_out,
        "after": (yield observer.callRemote("logouts", session)),
    }


@defer.inlineCallbacks
def scenario_disconnect(factory):
    mind = Mind()
    avatar = yield factory.login(alice(), client=mind)
    KEPT.append(avatar)  # held until the connection goes
    session = yield avatar.callRemote("session")
    return {
        "session": session,
        "logouts": (yield avatar.callRemote("logouts", session)),
    }


@defer.inlineCallbacks
def scenario_unhandled(factory):
    # Anonymous login against a portal that has no anonymous checker.
    kind, f = yield outcome(factory.login(credentials.Anonymous(), client=Mind()))
    report = refusal_report(kind, f)
    avatar = yield factory.login(alice(), client=Mind())
    report["after"] = repr((yield avatar.callRemote("whoami")))
    return report


SCENARIOS = {
    name[len("scenario_"):]: func
    for name, func in list(globals().items())
    if name.startswith("scenario_")
}


# --- driver -------------------------------------------------------------------


def main(argv):
    if len(argv) != 4 or argv[1] not in SCENARIOS:
        sys.stderr.write(
            "usage: twisted_login_client.py {%s} HOST PORT\n" % ",".join(sorted(SCENARIOS))
        )
        return 2
    scenario, host, port = argv[1], argv[2], int(argv[3])
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory, timeout=10)
    d = defer.maybeDeferred(SCENARIOS[scenario], factory)
    return run_scenario(factory, d, scenario, DEADLINE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
