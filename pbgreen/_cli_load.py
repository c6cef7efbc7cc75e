"""Finding the object ``pbgreen serve MODULE:OBJECT`` names.

MODULE is imported from the current directory, as uvicorn and gunicorn do;
a mistake in it (missing module, syntax error, missing attribute) becomes a
``_Fail`` naming the file and line, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any

from ._cli_args import _Fail

log = logging.getLogger("pbgreen.cli")

# ----------------------------------------------------------------------------- loading


def _cwd_on_path() -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _split_spec(spec: str) -> tuple[str, str]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:OBJECT, e.g. myapp:Root, got {spec!r}")
    return module_name, attribute


def _get_attribute(module: Any, module_name: str, attribute: str) -> Any:
    obj = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def load_object(spec: str) -> Any:
    """The object named by ``MODULE:OBJECT`` (MODULE importable from the current directory)."""
    module_name, attribute = _split_spec(spec)
    _cwd_on_path()
    return _get_attribute(importlib.import_module(module_name), module_name, attribute)


def _shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is under it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith(os.pardir) else relative


def _where(exc: BaseException) -> str:
    """``file, line N`` of the innermost frame of ``exc`` outside the import machinery."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<") and "importlib" not in frame.filename
              and os.path.dirname(frame.filename) != os.path.dirname(__file__)]
    if not frames:
        return ""
    return f" ({_shown_path(frames[-1].filename)}, line {frames[-1].lineno})"


def _import(name: str) -> Any:
    """Import module ``name`` (the current directory first) or fail with one line naming it."""
    _cwd_on_path()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise _Fail(f"no module named {name!r} (looked in {os.getcwd()} and the Python "
                        "path)") from None
        raise _Fail(f"cannot import {name!r}: {exc}{_where(exc)}") from None
    except SyntaxError as exc:
        where = f" ({_shown_path(exc.filename)}, line {exc.lineno})" if exc.filename else ""
        raise _Fail(f"cannot import {name!r}: {type(exc).__name__}: {exc.msg}{where}") from None
    except Exception as exc:
        log.debug("importing %s failed", name, exc_info=True)
        raise _Fail(f"cannot import {name!r}: {type(exc).__name__}: {exc}{_where(exc)}") from None


def _load_root(spec: str) -> Any:
    from .cred import Portal
    from .flavors import Referenceable

    try:
        module_name, attribute = _split_spec(spec)
    except ValueError as exc:
        raise _Fail(str(exc)) from None
    module = _import(module_name)
    try:
        obj = _get_attribute(module, module_name, attribute)
    except ValueError as exc:
        raise _Fail(str(exc)) from None
    if isinstance(obj, (Referenceable, Portal)):
        return obj
    if not callable(obj):
        raise _Fail(f"{spec} is {obj!r}: neither a root object nor something that makes one")
    try:
        root = obj()  # a class or a factory
    except Exception as exc:
        log.debug("%s() failed", spec, exc_info=True)
        raise _Fail(f"cannot make the root object: {spec}() raised "
                    f"{type(exc).__name__}: {exc}{_where(exc)}") from None
    if not isinstance(root, (Referenceable, Portal)) and not hasattr(root, "remoteMethod"):
        raise _Fail(f"{spec}() made {root!r}, which is neither a pb.Referenceable (pb.Root) "
                    "nor a pb.Portal")
    return root
