"""The ``pbgreen`` command: serve a root object, or call one.

    pbgreen serve MODULE:OBJECT [--host H] [--port P] [--tls-cert F --tls-key F]
    pbgreen call HOST:PORT METHOD [ARG ...] [-k NAME=VALUE ...] [--tls-ca F]

``serve`` imports MODULE from the current directory (as uvicorn and gunicorn
do) and serves OBJECT: a root instance, or a class or factory called with no
arguments to make one. ``call`` connects to any PB server (pbgreen or
Twisted), calls METHOD on its root and prints the answer; a remote error is
printed to stderr and the exit status is 1 (2 if the server cannot be reached).
Arguments are JSON or Python literals; anything else is taken as a string.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import signal
import ssl
import sys
from typing import Any, Sequence

from . import portno

__all__ = ["main", "load_object", "parse_value"]


def load_object(spec: str) -> Any:
    """The object named by ``MODULE:OBJECT`` (MODULE importable from the current directory)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected MODULE:OBJECT, e.g. myapp:Root, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def _make_root(obj: Any) -> Any:
    from .cred import Portal
    from .flavors import Referenceable

    if isinstance(obj, (Referenceable, Portal)):
        return obj
    if callable(obj):  # a class or a factory
        return obj()
    raise ValueError(f"{obj!r} is neither a root object nor something that makes one")


def parse_value(text: str) -> Any:
    """A command-line argument: JSON, else a Python literal, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, portno
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None


def _serve(args: argparse.Namespace) -> int:
    import gevent

    from .server import PBServer

    try:
        root = _make_root(load_object(args.target))
    except (ImportError, ValueError) as exc:
        print(f"pbgreen serve: {exc}", file=sys.stderr)
        return 2
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    server = PBServer(root, port=args.port, host=args.host, ssl_context=context,
                      unsafeTracebacks=args.unsafe_tracebacks)
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anyone can know we are up
        gevent.signal_handler(signum, server.stop)
    server.start()
    host, port = server.address
    print(f"pbgreen: serving {args.target} on {host}:{port}{' (TLS)' if context else ''}",
          flush=True)
    server.serve_forever()
    return 0


def _call(args: argparse.Namespace) -> int:
    from .client import PBClient
    from .errors import CopiedFailure, DeadReferenceError, InsecureJelly, PBConnectionLost

    host, port = args.address
    kwargs = {}
    for item in args.kwarg:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"pbgreen call: expected NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        kwargs[name] = parse_value(value)
    context = None
    if args.tls_ca:
        context = ssl.create_default_context(cafile=args.tls_ca)
    try:
        client = PBClient(host, port, timeout=args.timeout, ssl_context=context)
    except OSError as exc:
        print(f"pbgreen call: {exc}", file=sys.stderr)
        return 2
    try:
        answer = client.getRootObject().callRemote(args.method,
                                                   *map(parse_value, args.args), **kwargs)
    except CopiedFailure as exc:
        print(f"remote error: {exc.type}: {exc.getErrorMessage()}", file=sys.stderr)
        if args.traceback:
            print(exc.remoteTraceback, file=sys.stderr, end="")
        return 1
    except InsecureJelly as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except (DeadReferenceError, PBConnectionLost) as exc:
        print(f"pbgreen call: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if args.json:
        try:
            print(json.dumps(answer))
        except TypeError as exc:
            print(f"pbgreen call: the answer is not JSON ({exc}); drop --json to print it "
                  "as a Python value", file=sys.stderr)
            return 1
    else:
        print(repr(answer))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbgreen", description="Serve a Perspective Broker root object, or call one.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve a root object over PB",
        description="Serve MODULE:OBJECT over PB. OBJECT is a root instance, or a class or "
                    "factory called with no arguments; MODULE is imported from the current "
                    "directory. Stops cleanly on SIGINT or SIGTERM.")
    serve.add_argument("target", metavar="MODULE:OBJECT", help="e.g. myapp:Root")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=portno, help=f"port (default {portno}; 0 "
                                                                  "picks a free one)")
    serve.add_argument("--tls-cert", help="PEM certificate: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--unsafe-tracebacks", action="store_true",
                       help="send full tracebacks to callers with errors")
    serve.set_defaults(run=_serve)

    call = commands.add_parser(
        "call", help="call a method on a PB server's root and print the answer",
        description="Call METHOD on the root object at HOST:PORT (pbgreen or Twisted) and "
                    "print the answer. Each ARG is JSON or a Python literal (42, 'text', "
                    "b'raw', [1, 2], {\"k\": 1}); anything else is passed as a string. A "
                    "remote error goes to stderr with exit status 1.")
    call.add_argument("address", type=_address, metavar="HOST:PORT")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", nargs="*", metavar="ARG")
    call.add_argument("-k", "--kwarg", action="append", default=[], metavar="NAME=VALUE",
                      help="a keyword argument (repeatable)")
    call.add_argument("--timeout", type=float, default=10.0,
                      help="seconds for connecting (default 10)")
    call.add_argument("--tls-ca", metavar="FILE", help="speak TLS, trusting this CA file")
    call.add_argument("--json", action="store_true", help="print the answer as JSON")
    call.add_argument("--traceback", action="store_true",
                      help="also print the remote traceback of an error")
    call.set_defaults(run=_call)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pbgreen`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve" and bool(args.tls_cert) != bool(args.tls_key):
        print("pbgreen serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
