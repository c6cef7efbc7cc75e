"""Twisted's ``CopyableFailure`` wire format, both ways.

An ``error`` answer carries ``['twisted.spread.pb.CopyableFailure', state]``
where ``state`` is a jellied dictionary (type, value, parents, traceback,
...). ``failure_sexp`` builds it from an exception; ``failure_from`` turns
any error payload (Twisted's, ours, or a bare string) into the exception the
caller raises. Neither runs user code: the payload holds only plain values,
read with a security policy that admits no class.
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any

from .errors import CopiedFailure, InsecureJelly, make_copied_failure, parents_of, qual
from .jelly import SecurityOptions, Unjellier

__all__ = ["FAILURE_TAG", "failure_sexp", "failure_from", "MAX_ERROR_TEXT"]

FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"
MAX_ERROR_TEXT = 64 * 1024
_U = b"unicode"
_count = itertools.count(1)
_NOTHING_ALLOWED = SecurityOptions()


def failure_sexp(exc: BaseException, unsafe_tracebacks: bool) -> list[Any]:
    """The jellied ``CopyableFailure`` for ``exc``, as Twisted writes it."""
    if isinstance(exc, CopiedFailure):
        type_name, value, parents = exc.type, exc.value, exc.parents
    else:
        type_name, value, parents = qual(type(exc)), _safe_str(exc), parents_of(type(exc))
    if unsafe_tracebacks:
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
        try:
            state = Unjellier(None, None, _NOTHING_ALLOWED).unjellyFull(sexp[1])
        except Exception as exc:
            return InsecureJelly(f"unreadable error from the peer: {exc}")
        if not isinstance(state, dict):
            return InsecureJelly("unreadable error from the peer: state is not a dict")
        type_name = _text(state.get("type", "builtins.Exception"))
        parents = state.get("parents")
        parents = [_text(p) for p in parents] if isinstance(parents, list) and parents \
            else [type_name]
        return make_copied_failure(type_name, _text(state.get("value", "")),
                                   _text(state.get("traceback", "Traceback unavailable\n")),
                                   parents)
    if type(sexp) is list and sexp and type(sexp[0]) is bytes and b"." in sexp[0]:
        name = sexp[0].decode("utf-8", "replace")
        return make_copied_failure(name, "", "Traceback unavailable\n", [name])
    try:
        value = Unjellier(None, None, _NOTHING_ALLOWED).unjellyFull(sexp)
    except Exception:
        value = sexp
    return make_copied_failure("builtins.Exception", _safe_str(value), "Traceback unavailable\n",
                               None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return _safe_str(value)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _clip(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_ERROR_TEXT:
        data = data[:MAX_ERROR_TEXT] + b"... (truncated)"
    return data
