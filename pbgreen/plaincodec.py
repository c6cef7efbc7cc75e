"""Plain data straight to and from banana bytes: the compiled codec, or pure Python.

``dumps``, ``dumps_head``, ``dumps_values`` and ``loads`` come from the C
extension ``pbgreen._ccodec`` when it was built and imports, and from the
pure-Python ``pbgreen._pycodec`` otherwise; both give the same bytes, values
and exceptions (see ``_pycodec`` for what the codec does and when it raises
``Fallback``). Set the environment variable ``PBGREEN_PUREPYTHON`` to a
non-empty value other than ``0`` before pbgreen is imported to use the
pure-Python codec even when the extension is there.

``COMPILED`` says which one is active; ``python`` and ``compiled`` are the
two implementations (``compiled`` is ``None`` when not in use), and
``implementations()`` lists every one that imports here, whatever the
environment asks for (the tests compare them).
"""

from __future__ import annotations

import os
from types import ModuleType

from . import _pycodec as python
from ._pycodec import Built, Fallback
from .banana import NO_VOCAB, VOCAB_CODES  # the two vocabularies callers pass (as before)

__all__ = ["Fallback", "Built", "dumps", "dumps_head", "dumps_values", "loads", "COMPILED",
           "python", "compiled", "pure_python_requested", "implementations", "NO_VOCAB",
           "VOCAB_CODES"]


def pure_python_requested() -> bool:
    """Whether ``PBGREEN_PUREPYTHON`` asks for the pure-Python codec."""
    return os.environ.get("PBGREEN_PUREPYTHON", "") not in ("", "0")


def _import_compiled() -> ModuleType | None:
    try:
        from . import _ccodec
    except ImportError:  # not built (no compiler at install time): pure Python it is
        return None
    return _ccodec


def implementations() -> dict[str, ModuleType]:
    """``{"python": ..., "compiled": ...}``: each codec that imports, whichever is active."""
    found = {"python": python}
    module = _import_compiled()
    if module is not None:
        found["compiled"] = module
    return found


#: The compiled codec module, or ``None`` when the pure-Python one is active.
compiled: ModuleType | None = None if pure_python_requested() else _import_compiled()
#: Whether the compiled codec is the one in use.
COMPILED: bool = compiled is not None

_active = compiled or python
dumps = _active.dumps
dumps_head = _active.dumps_head
dumps_values = _active.dumps_values
loads = _active.loads
