"""Which classes may cross the wire: ``SecurityOptions`` and the global registry.

Nothing is ever imported by name. A class is sent only if it is a flavor or
registered as sendable, and an instance is rebuilt only if its tag was
registered with ``setUnjellyableForClass`` (globally, or on the
``SecurityOptions`` a connection was given).
"""

from __future__ import annotations

import types
from typing import Any, Callable

from .errors import qual

__all__ = ["SecurityOptions", "globalSecurity", "setUnjellyableForClass",
           "setUnjellyableFactoryForClass", "setUnjellyableForClassTree", "Factory",
           "setCopierForClass", "setCopierForClassTree", "setFactoryForClass"]


class SecurityOptions:
    """Which classes may arrive, and as what local class.

    Deny by default: a tag is accepted only when registered here with
    ``setUnjellyableForClass`` (or ``allowInstancesOf``). Brokers without
    options of their own use ``globalSecurity``.
    """

    def __init__(self) -> None:
        self._unjellyables: dict[bytes, Any] = {}
        self._sendable: set[type] = set()

    def setUnjellyableForClass(self, remote: type | str, local: Any) -> None:
        """Accept instances tagged with ``remote``'s name, built as ``local``."""
        name = remote if isinstance(remote, str) else qual(remote)
        self._unjellyables[name.encode()] = local
        if isinstance(local, type):
            self._sendable.add(local)
        if isinstance(remote, type):
            self._sendable.add(remote)

    def setUnjellyableFactoryForClass(self, remote: type | str, factory: Callable[[Any], Any]) -> None:
        """Accept instances tagged with ``remote``'s name, built by ``factory(state)``."""
        name = remote if isinstance(remote, str) else qual(remote)
        self._unjellyables[name.encode()] = Factory(factory)

    def allowInstancesOf(self, *classes: type) -> None:
        """Accept and send instances of ``classes`` as themselves."""
        for cls in classes:
            self.setUnjellyableForClass(cls, cls)

    def unjellyableFor(self, tag: bytes) -> Any:
        """The local class (or factory) registered for ``tag``, or ``None``."""
        return self._unjellyables.get(tag)

    def isSendable(self, cls: type) -> bool:
        """Whether instances of ``cls`` (not a flavor) may be sent as plain state."""
        return cls in self._sendable


class Factory:
    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        self.factory = factory


globalSecurity = SecurityOptions()


def setUnjellyableForClass(remote: type | str, local: Any) -> None:
    """Allow instances of ``remote`` (a class or ``"module.Class"``) in, built as ``local``.

    Registers globally, for every connection that has no security options of
    its own. ``local`` is normally a ``pb.RemoteCopy`` or ``pb.RemoteCache``
    subclass; it is instantiated without calling ``__init__``.
    """
    globalSecurity.setUnjellyableForClass(remote, local)


def setUnjellyableFactoryForClass(remote: type | str, factory: Callable[[Any], Any]) -> None:
    """Allow instances of ``remote`` in, built by ``factory(state)``."""
    globalSecurity.setUnjellyableFactoryForClass(remote, factory)


def setUnjellyableForClassTree(module: types.ModuleType, baseClass: type,
                               prefix: str | None = None) -> None:
    """Register every class in ``module`` that is ``baseClass`` or a subclass of it.

    As in Twisted: each module attribute ``name`` holding such a class is
    accepted under ``prefix + "." + name`` (``prefix`` defaults to the
    module's name) and built as that class.
    """
    if prefix is None:
        prefix = module.__name__
    if prefix:
        prefix = prefix + "."
    for name in dir(module):
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, baseClass):
            setUnjellyableForClass(prefix + name, obj)


# Twisted's older names for the same registrations (``flavors.setCopierForClass``...).
setCopierForClass = setUnjellyableForClass
setCopierForClassTree = setUnjellyableForClassTree
setFactoryForClass = setUnjellyableFactoryForClass
