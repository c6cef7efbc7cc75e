"""Helpers several test modules share (importable because pytest puts ``tests/`` on the path).

``load_harness(name)`` imports a fuzz harness from ``fuzz/`` (scripts, not a
package); ``plain_values(scalars, hashables)`` is the Hypothesis strategy of
plain data trees the codec tests generate; ``outcome(function, *args)`` is
what a call returned or the exception it raised.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"


def load_harness(name: str) -> ModuleType:
    """The module ``fuzz/<name>.py``, loaded once per process."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def plain_values(scalars: st.SearchStrategy, hashables: st.SearchStrategy) -> st.SearchStrategy:
    """Trees of lists, tuples, dicts, sets and frozensets with ``scalars`` as leaves."""
    return st.recursive(
        scalars,
        lambda inner: (st.lists(inner, max_size=8) | st.lists(inner, max_size=8).map(tuple)
                       | st.dictionaries(hashables, inner, max_size=8)
                       | st.frozensets(hashables, max_size=5) | st.sets(hashables, max_size=5)),
        max_leaves=40)


def outcome(function, *args):
    """``function(*args)``, or the exception it raised (returned, so gevent logs nothing)."""
    try:
        return function(*args)
    except Exception as exc:
        return exc
