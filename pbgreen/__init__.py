"""pbgreen: Twisted's Perspective Broker on gevent.

``callRemote`` blocks only the calling greenlet and returns the answer or
raises the copied remote error. The wire protocol is Twisted PB's, so
pbgreen and Twisted peers talk to each other in both directions.
"""

from . import banana, jelly
from .client import PBClient, connect
from .errors import (BananaError, CopiedFailure, DeadReferenceError, Error, InsecureJelly,
                     NoSuchMethod, PBConnectionLost, ProtocolError, RefLimitError,
                     UnauthorizedLogin, UnhandledCredentials)
from .flavors import (Avatar, Cacheable, Copyable, Referenceable, RemoteCache, RemoteCopy,
                      Root, Viewable)
from .jelly import (SecurityOptions, setUnjellyableFactoryForClass, setUnjellyableForClass,
                    setUnjellyableForClassTree)
from .reference import RemoteReference
from .server import PBServer, portno

__version__ = "0.1.0"

__all__ = [
    "Avatar", "BananaError", "Cacheable", "Copyable", "CopiedFailure", "DeadReferenceError",
    "Error", "InsecureJelly", "NoSuchMethod", "PBClient", "PBConnectionLost", "PBServer",
    "ProtocolError", "RefLimitError", "Referenceable", "RemoteCache", "RemoteCopy",
    "RemoteReference", "Root", "SecurityOptions", "UnauthorizedLogin", "UnhandledCredentials",
    "Viewable", "banana", "connect", "jelly", "portno", "setUnjellyableFactoryForClass",
    "setUnjellyableForClass", "setUnjellyableForClassTree",
]
