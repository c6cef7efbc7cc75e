"""Login: credentials, checkers, realms, the portal, and PB's login root.

How it works. A ``Portal`` pairs a realm (who a user is once known) with
checkers (how to know it). ``Portal.login(credentials, mind, IPerspective)``
asks the first checker that accepts this kind of credentials for an
*avatar id* (the username, or ``ANONYMOUS``), then asks the realm for the
avatar: ``(interface, avatar, logout)``.

PB login on the wire (WIRE §5) is a challenge/response so the password never
travels: the client calls ``login(username)`` on the root and gets a random
challenge and a *challenger* reference; it answers
``MD5(MD5(password) + challenge)`` with ``respond(response, mind)`` and gets a
reference to its avatar. ``logout`` runs exactly once: when the client drops
that reference or when the connection goes.

Nothing here does I/O or imports gevent. Checkers may block (a database
lookup): under pbgreen each login runs in its own greenlet.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from typing import Any, Callable, Protocol, runtime_checkable

from .errors import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from .flavors import AsReferenceable, Referenceable, Root

__all__ = ["IPerspective", "IRealm", "ICredentialsChecker", "UsernamePassword",
           "IUsernameHashedPassword", "IUsernameMD5Password", "UsernameHashedPassword", "Anonymous",
           "ANONYMOUS", "InMemoryPasswordChecker", "AllowAnonymousAccess", "Portal",
           "LoginFailed", "UnauthorizedLogin", "UnhandledCredentials", "PortalRoot", "respond"]

#: The avatar id of an anonymous login (Twisted's is also ``()``).
ANONYMOUS: tuple[()] = ()


class IPerspective:
    """The interface PB asks realms for: an avatar reachable over PB."""


@runtime_checkable
class IRealm(Protocol):
    """What a realm does: turn an avatar id into an avatar."""

    def requestAvatar(self, avatarId: Any, mind: Any,
                      *interfaces: Any) -> tuple[Any, Any, Callable[[], Any]]:
        """Return ``(interface, avatar, logout)`` for ``avatarId``.

        ``mind`` is the client's ``client=`` argument (a ``RemoteReference``
        or ``None``); ``logout`` is called once when the session ends.
        """
        ...


@runtime_checkable
class ICredentialsChecker(Protocol):
    """What a checker does: accept some kinds of credentials, return an avatar id."""

    credentialInterfaces: tuple[type, ...]

    def requestAvatarId(self, credentials: Any) -> Any:
        """The avatar id for ``credentials``; raise ``UnauthorizedLogin`` if refused."""
        ...


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def respond(challenge: bytes, password: bytes) -> bytes:
    """PB's login response: ``MD5(MD5(password) + challenge)``."""
    return _md5(_md5(password) + challenge)


def challenge() -> bytes:
    """A fresh 16-byte login challenge, as Twisted makes them."""
    letters = "".join(secrets.choice(string.ascii_uppercase)
                      for _ in range(15 + secrets.randbelow(10)))
    return _md5(letters.encode("ascii"))


class UsernamePassword:
    """A username and a password, both ``bytes`` (as in Twisted)."""

    def __init__(self, username: bytes, password: bytes) -> None:
        if not isinstance(username, bytes) or not isinstance(password, bytes):
            raise TypeError("username and password must be bytes, e.g. b'alice', b'secret'")
        self.username = username
        self.password = password

    def checkPassword(self, password: bytes) -> bool:
        """Whether ``password`` is this password (in constant time)."""
        return hmac.compare_digest(self.password, password)


class Anonymous:
    """Credentials of a user who does not log in."""


class IUsernameHashedPassword:
    """Credentials holding a username and a *hash* of a password (Twisted's name).

    A checker that keeps passwords in plain text lists this interface in its
    ``credentialInterfaces`` and calls ``credentials.checkPassword(stored)``.
    PB's login credentials are one. Credential "interfaces" are classes
    here: credentials provide one by being an instance of it.
    """

    username: bytes

    def checkPassword(self, password: bytes) -> bool:
        """Whether these credentials were made from the plain-text ``password``."""
        raise NotImplementedError


class IUsernameMD5Password:
    """Credentials a checker can test against the MD5 digest of a password (Twisted's name).

    A checker that stores ``hashlib.md5(password).digest()`` instead of the
    password lists this interface and calls
    ``credentials.checkMD5Password(stored_digest)``. PB's login credentials
    are one.
    """

    username: bytes

    def checkMD5Password(self, md5Password: bytes) -> bool:
        """Whether these credentials were made from the password with this MD5 digest."""
        raise NotImplementedError


class UsernameHashedPassword(IUsernameHashedPassword, IUsernameMD5Password):
    """Credentials of a PB login: the server sees a hash of the password, never the password.

    Provides ``IUsernameHashedPassword`` and ``IUsernameMD5Password``: a
    checker calls ``checkPassword(plain)`` or ``checkMD5Password(digest)``.
    """

    def __init__(self, username: bytes, challenge: bytes, response: bytes) -> None:
        self.username = username
        self.challenge = challenge
        self.response = response

    def checkPassword(self, password: bytes) -> bool:
        """Whether the client's response proves it knows ``password`` (constant time)."""
        return self.checkMD5Password(_md5(password))

    def checkMD5Password(self, md5Password: bytes) -> bool:
        """Whether the response was made from the password whose MD5 digest this is."""
        return hmac.compare_digest(_md5(md5Password + self.challenge), self.response)


class InMemoryPasswordChecker:
    """Users and passwords held in memory: ``InMemoryPasswordChecker(alice=b"secret")``."""

    credentialInterfaces = (UsernamePassword, IUsernameHashedPassword)

    def __init__(self, **users: bytes) -> None:
        self.users: dict[bytes, bytes] = {}
        for name, password in users.items():
            self.addUser(name.encode("utf-8"), password)

    def addUser(self, username: bytes, password: bytes) -> None:
        """Add or replace a user (both ``bytes``)."""
        if not isinstance(username, bytes) or not isinstance(password, bytes):
            raise TypeError("username and password must be bytes")
        self.users[username] = password

    def requestAvatarId(self, credentials: Any) -> bytes:
        """The username if the password matches; ``UnauthorizedLogin`` otherwise."""
        username = getattr(credentials, "username", None)
        stored = self.users.get(username) if isinstance(username, bytes) else None
        # Check something even for an unknown user, so timing tells nothing.
        ok = credentials.checkPassword(stored if stored is not None else b"\0" * 16)
        if stored is None or not ok:
            raise UnauthorizedLogin()
        return username


class AllowAnonymousAccess:
    """A checker that lets anonymous users in (avatar id ``ANONYMOUS``)."""

    credentialInterfaces = (Anonymous,)

    def requestAvatarId(self, credentials: Any) -> Any:
        return ANONYMOUS


class Portal:
    """A realm plus the checkers that authenticate its users."""

    def __init__(self, realm: IRealm, checkers: Any = ()) -> None:
        self.realm = realm
        self.checkers: dict[type, ICredentialsChecker] = {}
        for checker in checkers:
            self.registerChecker(checker)

    def registerChecker(self, checker: ICredentialsChecker, *interfaces: type) -> None:
        """Use ``checker`` for credentials of these types (default: its own list)."""
        for interface in interfaces or checker.credentialInterfaces:
            self.checkers[interface] = checker

    def listCredentialsInterfaces(self) -> list[type]:
        """The kinds of credentials this portal can check."""
        return list(self.checkers)

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        """Authenticate and return the realm's ``(interface, avatar, logout)``.

        Raises ``UnhandledCredentials`` if no checker takes these
        credentials, ``UnauthorizedLogin`` if the checker refuses them.
        """
        for kind, checker in self.checkers.items():
            if isinstance(credentials, kind):
                avatar_id = checker.requestAvatarId(credentials)
                return self.realm.requestAvatar(avatar_id, mind, *interfaces)
        raise UnhandledCredentials(f"no checker for {type(credentials).__name__} credentials")


# ----------------------------------------------------------------------------------------
# PB's side of login: the root a portal is served through


class _Session:
    """One login's avatar; runs ``logout`` once, whichever comes first."""

    def __init__(self, logout: Callable[[], Any] | None, protocol: Any = None) -> None:
        self._logout = logout
        self._protocol = protocol

    def end(self) -> None:
        logout, self._logout = self._logout, None
        if self._protocol is not None:  # ended by a release: no disconnect hook needed
            self._protocol.forget_lost(self.end)
            self._protocol = None
        if logout is not None:
            logout()


class PortalRoot(Root):
    """The root a ``PBServer`` gives each connection when it serves a portal.

    Speaks Twisted's login protocol: ``login(username)`` returns
    ``(challenge, challenger)``, ``challenger.respond(response, mind)`` and
    ``loginAnonymous(mind)`` return the avatar.

    Guessing is made slow: after a refused login on a connection, its next
    attempt waits ``penalty`` seconds (50 ms, doubling up to 2 s; a success
    resets it). Attempts are given turns, so sending many at once does not
    get around the wait; the waiting costs the server a sleeping greenlet.
    """

    first_penalty = 0.05
    max_penalty = 2.0

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.connection: Any = None
        self.penalty = 0.0
        self._next_turn = 0.0

    def rootObject(self, connection: Any) -> "PortalRoot":
        root = PortalRoot(self.portal)
        root.connection = connection
        return root

    def remote_login(self, username: Any) -> tuple[bytes, "_Challenger"]:
        if not isinstance(username, bytes):
            username = str(username).encode("utf-8")
        return_challenge = challenge()
        return return_challenge, _Challenger(self, username, return_challenge)

    def remote_loginAnonymous(self, mind: Any) -> Referenceable:
        return self._avatar(Anonymous(), mind)

    def _avatar(self, credentials: Any, mind: Any) -> Referenceable:
        interface, avatar, logout = self.portal.login(credentials, mind, IPerspective)
        reference = avatar if isinstance(avatar, Referenceable) else AsReferenceable(avatar)
        if self.connection is not None:
            protocol = self.connection.protocol
            session = _Session(logout, protocol)
            protocol.on_release(reference, session.end)
            protocol.on_lost(session.end)
        return reference


class _Challenger(Referenceable):
    """The one-use object a client answers its login challenge to."""

    def __init__(self, root: PortalRoot, username: bytes, challenge: bytes) -> None:
        self.root = root
        self.username = username
        self.challenge = challenge

    def remote_respond(self, response: Any, mind: Any) -> Referenceable:
        root = self.root
        now = time.monotonic()
        turn = max(now, root._next_turn)
        root._next_turn = turn + root.penalty
        if turn > now and root.connection is not None:
            root.connection.sleep(turn - now)
        try:
            if not isinstance(response, bytes):
                raise UnauthorizedLogin()
            credentials = UsernameHashedPassword(self.username, self.challenge, response)
            avatar = root._avatar(credentials, mind)
        except UnauthorizedLogin:
            root.penalty = min(max(root.first_penalty, root.penalty * 2), root.max_penalty)
            root._next_turn = max(root._next_turn, time.monotonic() + root.penalty)
            raise
        root.penalty = 0.0
        return avatar

