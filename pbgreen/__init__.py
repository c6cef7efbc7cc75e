"""pbgreen: Twisted's Perspective Broker on gevent.

``callRemote`` blocks only the calling greenlet and returns the answer or
raises the copied remote error. The wire protocol is Twisted PB's, so
pbgreen and Twisted peers talk to each other in both directions.
"""

from typing import Any

from . import banana, cred, jelly
from ._failure import CopyableFailure
from .cred import (ANONYMOUS, AllowAnonymousAccess, Anonymous, ICredentialsChecker, IPerspective,
                   IRealm, IUsernameHashedPassword, IUsernameMD5Password, InMemoryPasswordChecker,
                   Portal, UsernamePassword)
from .dispatch import time_left
from .errors import (BananaError, CallTimeout, ClosedByPeer, ClosedLocally, CopiedFailure, DeadReferenceError,
                     Error, InsecureJelly,
                     LoginFailed, NoSuchMethod, PBConnectionLost, ProtocolError, RefLimitError,
                     RemoteError, UnauthorizedLogin, UnhandledCredentials)
from .flavors import (Avatar, Cacheable, Copyable, Referenceable, RemoteCache, RemoteCopy,
                      Root, Viewable)
from .jelly import (SecurityOptions, setUnjellyableFactoryForClass, setUnjellyableForClass,
                    setUnjellyableForClassTree)
from .reference import RemoteReference

#: PB's default port.
portno = 8787

# The gevent driver is imported on first use, so that ``import pbgreen.jelly``
# (the sans-I/O core) never pulls gevent in.
_DRIVER = {"PBClient": "client", "connect": "client", "PBServer": "server"}


def __getattr__(name: str) -> Any:
    module = _DRIVER.get(name)
    if module is None:
        raise AttributeError(f"module 'pbgreen' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__version__ = "0.1.0"

__all__ = [
    "ANONYMOUS", "AllowAnonymousAccess", "Anonymous", "ICredentialsChecker", "IPerspective",
    "IRealm", "IUsernameHashedPassword", "IUsernameMD5Password", "InMemoryPasswordChecker", "Portal", "UsernamePassword", "cred",
    "Avatar", "BananaError", "CallTimeout", "Cacheable", "ClosedByPeer", "ClosedLocally", "Copyable", "CopyableFailure", "CopiedFailure", "DeadReferenceError",
    "Error", "InsecureJelly", "LoginFailed", "NoSuchMethod", "PBClient", "PBConnectionLost", "PBServer",
    "ProtocolError", "RefLimitError", "Referenceable", "RemoteError", "RemoteCache", "RemoteCopy",
    "RemoteReference", "Root", "SecurityOptions", "UnauthorizedLogin", "UnhandledCredentials",
    "Viewable", "banana", "connect", "jelly", "portno", "setUnjellyableFactoryForClass",
    "setUnjellyableForClass", "setUnjellyableForClassTree", "time_left",
]
