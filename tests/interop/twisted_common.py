"""Pieces shared by the two Twisted peer scripts (never imported by pytest).

The error classes live in a module named ``interop_errors`` so their fully
qualified names (``interop_errors.MyError``) match the pbgreen-side classes
that the tests define under the same name; pbgreen maps remote errors by
qualified name, and Twisted's ``Failure.check`` compares qualified names too.
"""

import sys
import types

from twisted.spread import pb

interop_errors = types.ModuleType("interop_errors")


class MyError(pb.Error):
    """A pb.Error subclass that the pbgreen side also defines."""


class OtherError(pb.Error):
    """A pb.Error subclass that the pbgreen side does not define."""


for _cls in (MyError, OtherError):
    _cls.__module__ = "interop_errors"
    _cls.__qualname__ = _cls.__name__
    setattr(interop_errors, _cls.__name__, _cls)
sys.modules["interop_errors"] = interop_errors


class Child(pb.Referenceable):
    def remote_hello(self, name):
        return "hello " + name
