"""Every exception pbgreen raises, in one tree.

```text
    Exception
     +-- Error                      expected remote errors (Twisted's pb.Error)
     |    +-- RefLimitError         too many live references on one connection
     +-- RemoteError                Twisted's name for a remote error (remoteType)
     |    +-- CopiedFailure         raised locally for any error the peer sent
     +-- InsecureJelly              a value refused by the security policy, by
     |                              us before sending or by the peer on receipt
     +-- NoSuchMethod (AttributeError)
     +-- ConnectionError            a connection failed; who is at fault is in the name
     |    +-- ProtocolError         the peer broke PB's rules; connection closed
     |    |    +-- BananaError      bytes that are not banana
     |    +-- PBConnectionLost      the line died while a call waited
     |    +-- DeadReferenceError    a call on a connection already gone
     |    +-- ClosedByPeer          the peer ended the stream     } the __cause__ of the
     |    +-- ClosedLocally         this side closed it           } two above, or OSError
     +-- TimeoutError (builtin)
     |    +-- CallTimeout           no answer within call_timeout; call abandoned
     +-- LoginFailed                a login did not succeed
          +-- UnauthorizedLogin     wrong password or unknown user
          +-- UnhandledCredentials  no checker for these credentials
```

Who is at fault is in the name: ``ProtocolError`` means the peer misbehaved,
``ClosedLocally`` that this side closed the connection, ``ClosedByPeer`` that
the peer did, an ``OSError`` that the network broke it;
``InsecureJelly`` means a value was refused (by us before sending, or by the
peer on receipt), ``CopiedFailure`` means the remote method raised.

``TWISTED_NAMES`` maps Twisted's qualified names of the equivalent classes to
ours, so errors from a Twisted peer surface as pbgreen's classes, and errors
we send list Twisted's names among their parents.
"""

from __future__ import annotations

import builtins
import weakref
from typing import Any


def qual(cls: type) -> str:
    """The fully qualified name PB uses for a class: ``module.Name`` (as Twisted's)."""
    return f"{cls.__module__}.{cls.__name__}"


# Known pb.Error subclasses by qualified name, so a remote error can become an
# instance of the caller's own class without importing anything by name.
_error_classes: "weakref.WeakValueDictionary[str, type]" = weakref.WeakValueDictionary()


class Error(Exception):
    """Base class of *expected* remote errors (Twisted's ``pb.Error``).

    Raise a subclass from a remote method to send it to the caller without
    logging it as a server error. A caller whose process defines a subclass
    under the same qualified name can ``except`` it directly.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _error_classes[qual(cls)] = cls


class RefLimitError(Error):
    """The connection holds as many live references as PB allows (1,024)."""


class InsecureJelly(Exception):
    """A class or type was refused by the security policy.

    Raised locally before sending a value that cannot be serialized, and in
    the caller when the peer refused something it was sent.
    """


class NoSuchMethod(AttributeError):
    """The remote object has no method of that name with the required prefix."""


class ProtocolError(ConnectionError):
    """The peer sent something that is not PB; the connection is closed.

    Fault: the peer's.
    """


class BananaError(ProtocolError):
    """Bytes that do not decode as banana, or that break one of its limits."""


class DeadReferenceError(ConnectionError):
    """A call on a reference whose connection is gone (raised at the call).

    ``__cause__`` says why the connection went (see ``PBConnectionLost``).
    """


class PBConnectionLost(ConnectionError):
    """The connection died while a call was waiting for its answer.

    ``__cause__`` is why: a ``ProtocolError`` (the peer broke PB), an
    ``OSError`` (the network broke it), ``ClosedByPeer`` or ``ClosedLocally``.
    """


class CallTimeout(TimeoutError):
    """No answer came within the client's ``call_timeout``; the call was abandoned."""


class ClosedByPeer(ConnectionError):
    """The peer closed the connection in an orderly way (end of stream)."""


class ClosedLocally(ConnectionError):
    """This side closed the connection: ``close()``, a server stopping, or a limit."""


class LoginFailed(Exception):
    """A login did not succeed (base of the login errors, as in ``twisted.cred``)."""


class UnauthorizedLogin(LoginFailed):
    """The credentials were refused: unknown user or wrong password."""


class UnhandledCredentials(LoginFailed):
    """The portal has no checker for this kind of credentials."""


class RemoteType(str):
    """A remote class's qualified name that also equals its UTF-8 bytes.

    Twisted's ``RemoteError.remoteType`` is ``bytes`` under Python 3
    (``b"builtins.ValueError"``); pbgreen's is this ``str``, so code written
    for either (``e.remoteType == b"..."`` or ``== "..."``) keeps working.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            return self.encode("utf-8") == other
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The name itself (so Twisted-era ``remoteType.decode()`` still works)."""
        return str(self)


class RemoteError(Exception):
    """A remote error, under Twisted's name (what ``inlineCallbacks`` code catches).

    Every exception ``callRemote`` raises for a remote error is one (through
    ``CopiedFailure``), so ``except pb.RemoteError as e: e.remoteType`` works.

    Attributes:
        remoteType: the remote class's qualified name (``"builtins.ValueError"``),
            a ``str`` that also equals Twisted's ``bytes`` form.
        remoteTraceback: the remote traceback text, or a placeholder.
    """

    remoteTraceback: str

    def __init__(self, remoteType: str | bytes, value: str, remoteTraceback: str) -> None:
        Exception.__init__(self, value)
        self._remote_type = remoteType.decode("utf-8", "replace") \
            if isinstance(remoteType, bytes) else remoteType
        self.remoteTraceback = remoteTraceback

    @property
    def remoteType(self) -> RemoteType:
        """The remote class's qualified name (equal to its str and bytes forms)."""
        return RemoteType(self._remote_type)


class CopiedFailure(RemoteError):
    """Raised locally for an error that happened on the peer.

    When the remote class is a builtin exception, ``InsecureJelly``, a login
    error, or a ``pb.Error`` subclass defined here under the same qualified
    name, the raised object is also an instance of that class.

    Attributes:
        type: the remote class's fully qualified name (``"builtins.ValueError"``).
        value: the remote ``str(exception)``.
        remoteTraceback: the remote traceback text, or a placeholder when the
            peer does not send tracebacks.
        parents: qualified names of the remote class and its bases.
    """

    type: str
    value: str
    remoteTraceback: str
    parents: list[str]

    def __init__(self, type: str = "builtins.Exception", value: str = "",
                 remoteTraceback: str = "Traceback unavailable\n",
                 parents: list[str] | None = None) -> None:
        Exception.__init__(self, value)
        self.type = type
        self.value = value
        self.remoteTraceback = remoteTraceback
        self.parents = list(parents) if parents else [type]

    @property
    def remoteType(self) -> RemoteType:
        """``type`` under Twisted's ``RemoteError`` name."""
        return RemoteType(self.type)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"<CopiedFailure {self.type}: {self.value!r}>"

    def getErrorMessage(self) -> str:
        """The remote exception's message, as ``Failure.getErrorMessage``."""
        return self.value

    def check(self, *types: type | str) -> type | str | None:
        """Return the first of ``types`` this error matches, else ``None``.

        A type matches when this object is an instance of it or when its
        qualified name is among the remote class's parents.
        """
        for t in types:
            name = t if isinstance(t, str) else qual(t)
            if name in self.parents or (not isinstance(t, str) and isinstance(self, t)):
                return t
        return None

    def trap(self, *types: type | str) -> type | str:
        """Return the matching type (see :meth:`check`) or re-raise this error."""
        found = self.check(*types)
        if found is None:
            raise self
        return found

    def printTraceback(self, file: Any = None) -> None:
        """Write the remote traceback, as ``Failure.printTraceback`` does."""
        import sys

        out = file if file is not None else sys.stderr
        out.write(f"Traceback from remote host -- {self.type}: {self.value}\n")
        out.write(self.remoteTraceback)


# Twisted's qualified names for the classes that have an equivalent here.
TWISTED_NAMES: dict[str, type] = {
    "twisted.spread.pb.Error": Error,
    "twisted.spread.jelly.InsecureJelly": InsecureJelly,
    "twisted.spread.flavors.NoSuchMethod": NoSuchMethod,
    "twisted.cred.error.LoginFailed": LoginFailed,
    "twisted.cred.error.UnauthorizedLogin": UnauthorizedLogin,
    "twisted.cred.error.UnhandledCredentials": UnhandledCredentials,
    "twisted.spread.pb.DeadReferenceError": DeadReferenceError,
    "twisted.spread.pb.PBConnectionLost": PBConnectionLost,
    "twisted.spread.pb.ProtocolError": ProtocolError,
    "twisted.spread.pb.RemoteError": RemoteError,
}
# Twisted's names to list after each of our classes among an error's parents
# (Twisted's UnauthorizedLogin is also a twisted.cred.error.Unauthorized).
_TWISTED_NAMES_OF: dict[type, list[str]] = {}
for _name, _cls in TWISTED_NAMES.items():
    _TWISTED_NAMES_OF.setdefault(_cls, []).append(_name)
_TWISTED_NAMES_OF[UnauthorizedLogin].append("twisted.cred.error.Unauthorized")
_OWN = {qual(c): c for c in (Error, RemoteError, RefLimitError, InsecureJelly, NoSuchMethod, ProtocolError,
                             BananaError, DeadReferenceError, PBConnectionLost, LoginFailed,
                             UnauthorizedLogin, UnhandledCredentials)}


def parents_of(cls: type) -> list[str]:
    """Qualified names of ``cls`` and its bases, most derived first.

    Twisted's name of an equivalent class follows ours, so a Twisted peer's
    ``failure.check(UnauthorizedLogin)`` matches an error pbgreen sent.
    """
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is CopiedFailure:
            continue
        names.append(qual(klass))
        names.extend(_TWISTED_NAMES_OF.get(klass, ()))
    return names


def local_class_for(name: str) -> type | None:
    """The local exception class that a remote qualified name stands for.

    Only classes already known in this process qualify: builtin exceptions,
    pbgreen's own, Twisted's equivalents, and ``pb.Error`` subclasses that
    were defined here. Nothing is imported.
    """
    if name.startswith("builtins."):
        cls = getattr(builtins, name[9:], None)
        if isinstance(cls, type) and issubclass(cls, Exception) and name.count(".") == 1:
            return cls
        return None
    return _OWN.get(name) or TWISTED_NAMES.get(name) or _error_classes.get(name)


_copied_classes: dict[type, type] = {}


def copied_failure_class(local: type | None) -> type:
    """A subclass of both ``CopiedFailure`` and ``local`` (cached)."""
    if local is None or issubclass(CopiedFailure, local) or issubclass(local, CopiedFailure):
        return CopiedFailure
    cls = _copied_classes.get(local)
    if cls is None:
        try:
            cls = type(f"CopiedFailure[{local.__qualname__}]", (CopiedFailure, local),
                       {"__module__": __name__, "__str__": CopiedFailure.__str__,
                        "__init__": CopiedFailure.__init__})
        except TypeError:  # a layout the two bases cannot share
            cls = CopiedFailure
        _copied_classes[local] = cls
    return cls


def make_copied_failure(type_name: str, value: str, traceback: str,
                        parents: list[str] | None) -> CopiedFailure:
    """Build the exception a caller sees for a remote error."""
    parents = list(parents) if parents else [type_name]
    local = None
    for name in parents:
        local = local_class_for(name)
        if local is not None:
            break
    cls = copied_failure_class(local)
    try:
        exc = cls.__new__(cls)
    except TypeError:  # a class whose __new__ needs arguments (ExceptionGroup, ...)
        exc = CopiedFailure.__new__(CopiedFailure)
    CopiedFailure.__init__(exc, type_name, value, traceback, parents)
    return exc


def copied_failure_from_state(state: Any) -> CopiedFailure:
    """The ``CopiedFailure`` for the state of a Twisted ``CopyableFailure``.

    ``state`` is the unjellied dictionary (``type``, ``value``, ``parents``,
    ``traceback``, ...); names may be ``bytes`` or ``str``. Raises
    ``InsecureJelly`` if it is not such a dictionary.
    """
    if not isinstance(state, dict):
        raise InsecureJelly(f"a failure from the peer whose state is not a dictionary: "
                            f"{safe_str(state)[:60]!r}")
    type_name = text(state.get("type", "builtins.Exception"))
    parents = state.get("parents")
    parents = [text(p) for p in parents] if isinstance(parents, (list, tuple)) and parents \
        else [type_name]
    return make_copied_failure(type_name, text(state.get("value", "")),
                               text(state.get("traceback", "Traceback unavailable\n")), parents)


def text(value: Any) -> str:
    """``value`` as text: ``bytes`` decoded as UTF-8, anything else through ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return safe_str(value)


def safe_str(value: Any) -> str:
    """``str(value)``, or a placeholder if that raises."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
