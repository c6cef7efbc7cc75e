"""Twisted's ``CopyableFailure`` wire format, both ways.

An ``error`` answer carries ``['twisted.spread.pb.CopyableFailure', state]``
where ``state`` is a jellied dictionary (type, value, parents, traceback,
...). ``failure_sexp`` builds it from an exception; ``failure_from`` turns
any error payload (Twisted's, ours, or a bare string) into the exception the
caller raises. Neither runs user code: the payload holds only plain values,
read with a security policy that admits no class.

The same format travels as a *value*: ``CopyableFailure(exc)`` inside an
argument or an answer is written by ``failure_sexp``, and the unjellier
turns the tag into a ``CopiedFailure`` wherever it meets it (``_unjelly``).
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any

from ._unjelly import FAILURE_TAG
from .errors import CopiedFailure, InsecureJelly, make_copied_failure, parents_of, qual, safe_str
from .jelly import Jellier, Jellyable, SecurityOptions, Unjellier

__all__ = ["FAILURE_TAG", "CopyableFailure", "failure_sexp", "failure_from", "MAX_ERROR_TEXT"]

MAX_ERROR_TEXT = 64 * 1024
_U = b"unicode"
_count = itertools.count(1)
_NOTHING_ALLOWED = SecurityOptions()


class CopyableFailure(Jellyable):
    """An exception sent as a value; the peer receives a ``CopiedFailure``.

    ``pb.CopyableFailure(exc)`` may go anywhere in an argument or an answer
    (in a list, a dict, a copy's state); a Twisted peer receives its own
    ``pb.CopiedFailure``, a pbgreen peer a ``pb.CopiedFailure``. ``exc`` may
    be a ``CopiedFailure`` received earlier, to pass it on with its remote
    type. A remote method that *returns* one at the top level answers with
    that error instead, as a Twisted caller's Deferred would fail.

    ``unsafeTracebacks`` (Twisted's name, false by default): send the
    traceback text of ``exc`` too.
    """

    _pb_tracked = True  # the same failure twice in one value arrives as one object

    def __init__(self, exc: BaseException, unsafeTracebacks: bool = False) -> None:
        if not isinstance(exc, BaseException):
            raise TypeError(f"CopyableFailure takes an exception instance, not {exc!r:.60}")
        self.value = exc
        self.unsafeTracebacks = unsafeTracebacks

    @property
    def type(self) -> str:
        """The qualified name of the exception's class (the remote one for a ``CopiedFailure``)."""
        return self.value.type if isinstance(self.value, CopiedFailure) else qual(type(self.value))

    def getErrorMessage(self) -> str:
        """``str()`` of the exception."""
        return safe_str(self.value)

    def jellyFor(self, jellier: Jellier) -> list[Any]:
        return failure_sexp(self.value, self.unsafeTracebacks)

    def __repr__(self) -> str:
        return f"<CopyableFailure {self.type}: {self.getErrorMessage()!r}>"


def failure_sexp(exc: BaseException, unsafe_tracebacks: bool) -> list[Any]:
    """The jellied ``CopyableFailure`` for ``exc``, as Twisted writes it."""
    copied = isinstance(exc, CopiedFailure)
    if copied:
        type_name, value, parents = exc.type, exc.value, exc.parents
    else:
        type_name, value, parents = qual(type(exc)), safe_str(exc), parents_of(type(exc))
    if unsafe_tracebacks and copied:
        text = exc.remoteTraceback
    elif unsafe_tracebacks:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        text = "Traceback unavailable\n"
    state = [b"dictionary",
             [[_U, b"count"], next(_count) % (2 ** 31)],
             [[_U, b"type"], type_name.encode("utf-8")],
             [[_U, b"value"], [_U, _clip(value)]],
             [[_U, b"captureVars"], [b"boolean", b"false"]],
             [[_U, b"tb"], [b"None"]],
             [[_U, b"unsafeTracebacks"], [b"boolean", b"true" if unsafe_tracebacks else b"false"]],
             [[_U, b"parents"], [b"list"] + [[_U, p.encode("utf-8")] for p in parents]],
             [[_U, b"frames"], [b"list"]],
             [[_U, b"stack"], [b"list"]],
             [[_U, b"traceback"], [_U, _clip(text)]]]
    return [FAILURE_TAG, state]


def failure_from(sexp: Any) -> Exception:
    """The exception to raise in the caller for an ``error`` payload."""
    if type(sexp) is list and len(sexp) == 2 and sexp[0] == FAILURE_TAG:
        try:  # the unjellier builds the failure from this tag (nothing else is allowed)
            return Unjellier(None, None, _NOTHING_ALLOWED).unjellyFull(sexp)
        except Exception as exc:
            return InsecureJelly(f"unreadable error from the peer: {exc}")
    if type(sexp) is list and sexp and type(sexp[0]) is bytes and b"." in sexp[0]:
        name = sexp[0].decode("utf-8", "replace")
        return make_copied_failure(name, "", "Traceback unavailable\n", [name])
    try:
        value = Unjellier(None, None, _NOTHING_ALLOWED).unjellyFull(sexp)
    except Exception:
        value = sexp
    return make_copied_failure("builtins.Exception", safe_str(value), "Traceback unavailable\n",
                               None)


def _clip(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_ERROR_TEXT:
        data = data[:MAX_ERROR_TEXT] + b"... (truncated)"
    return data
