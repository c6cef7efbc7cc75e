"""The ``pbgreen`` command: serve a root object, or call one.

    pbgreen serve MODULE:OBJECT [--host H] [--port P] [--tls-cert F --tls-key F]
                                [--log-level L] [--graceful-timeout S] ...
    pbgreen call HOST:PORT METHOD [ARG ...] [-k NAME=VALUE ...] [--timeout S]
                                  [--user NAME] [--import MODULE ...] [--tls-ca F] ...

``serve`` imports MODULE from the current directory (as uvicorn and gunicorn
do) and serves OBJECT: a root instance, or a class or factory called with no
arguments to make one. On SIGTERM or SIGINT it stops gracefully (running
calls get ``--graceful-timeout`` seconds to finish) and exits 0.

``call`` connects to any PB server (pbgreen or Twisted), calls METHOD on its
root (or, with ``--user``, on the avatar it logs in to) and prints the
answer. Arguments are JSON or Python literals; anything else is taken as a
string.

Exit status: 0 done; 1 the remote method raised (or the answer was refused);
2 a usage or connection problem, reported as one line on stderr that names
the file, the address or the module concerned (never a traceback).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn, Sequence

from . import portno
from ._cli_args import (PASSWORD_VARIABLE, _address, _count, _Fail, _grace, _listen_port,
                        _log_level, _timeout, _workers, parse_value)
from ._cli_call import _call
from ._cli_load import load_object
from ._cli_serve import run_until_stopped, _serve

__all__ = ["main", "load_object", "parse_value", "run_until_stopped"]

# ----------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pbgreen", description="Serve a Perspective Broker root object, or call one.",
        epilog="Exit status: 0 done, 1 the remote method raised, 2 a usage or connection "
               "problem (one line on stderr).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve a root object over PB",
        description="Serve MODULE:OBJECT over PB. OBJECT is a root instance, or a class or "
                    "factory called with no arguments; MODULE is imported from the current "
                    "directory. On SIGINT or SIGTERM it stops gracefully and exits 0.")
    serve.add_argument("target", metavar="MODULE:OBJECT", help="e.g. myapp:Root")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=_listen_port, default=portno,
                       help=f"port (default {portno}; 0 picks a free one)")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: serve TLS")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    serve.add_argument("--unsafe-tracebacks", action="store_true",
                       help="send full tracebacks to callers with errors")
    serve.add_argument("--log-level", type=_log_level, default="INFO", metavar="LEVEL",
                       help="DEBUG, INFO, WARNING or ERROR: what is logged to stderr "
                            "(default INFO)")
    serve.add_argument("--graceful-timeout", type=_grace, default=10.0, metavar="SECONDS",
                       help="on SIGINT or SIGTERM, how long running calls may finish "
                            "(default 10)")
    serve.add_argument("--backlog", type=_count, metavar="N",
                       help="the listen queue of connections not yet accepted (default: "
                            "PBServer's, 1024)")
    serve.add_argument("--max-connections", type=_count, metavar="N",
                       help="connections served at once (default: PBServer's, 10000)")
    serve.add_argument("--workers", type=_workers, metavar="N",
                       help="serve from N processes sharing the port, under a supervisor "
                            "that restarts any that dies; 0: one per CPU (default: one "
                            "process, no supervisor)")
    serve.add_argument("--proxy-protocol", action="store_true",
                       help="require HAProxy's PROXY protocol header (v1 or v2) on every "
                            "connection and report the client it names; only behind a proxy "
                            "that sends it")
    serve.set_defaults(run=_serve)

    call = commands.add_parser(
        "call", help="call a method on a PB server's root and print the answer",
        description="Call METHOD on the root object at HOST:PORT (pbgreen or Twisted), or "
                    "with --user on your avatar, and print the answer. Each ARG is JSON or a "
                    "Python literal (42, 'text', b'raw', [1, 2], {\"k\": 1}); anything else "
                    "is passed as a string. A remote error goes to stderr with exit status "
                    "1; a usage or connection problem with exit status 2.")
    call.add_argument("address", type=_address, metavar="HOST:PORT",
                      help="e.g. localhost:8800, :8800 (this machine) or [::1]:8800")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", nargs="*", default=[], metavar="ARG")
    call.add_argument("-k", "--kwarg", action="append", default=[], metavar="NAME=VALUE",
                      help="a keyword argument (repeatable)")
    call.add_argument("--timeout", type=_timeout, default=10.0, metavar="SECONDS",
                      help="the longest to wait for connecting, logging in and the answer, "
                           "all together (default 10)")
    call.add_argument("--user", metavar="NAME",
                      help=f"log in to the server's portal as NAME (password from "
                           f"${PASSWORD_VARIABLE}, else asked for) and call the avatar")
    call.add_argument("--import", dest="imports", action="append", default=[],
                      metavar="MODULE",
                      help="import MODULE first, e.g. one that registers copyable classes "
                           "(repeatable)")
    call.add_argument("--tls-ca", metavar="FILE", help="speak TLS, trusting this CA file")
    call.add_argument("--log-level", type=_log_level, default="ERROR", metavar="LEVEL",
                      help="DEBUG, INFO, WARNING or ERROR: what pbgreen logs to stderr "
                           "(default ERROR)")
    call.add_argument("--json", action="store_true", help="print the answer as JSON")
    call.add_argument("--traceback", action="store_true",
                      help="also print the remote traceback of an error")
    call.set_defaults(run=_call)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pbgreen`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except _Fail as exc:
        message = re.sub(r"\s*\n\s*", " ", str(exc)).strip()
        print(f"pbgreen {args.command}: {message}", file=sys.stderr, flush=True)
        return exc.status
    except KeyboardInterrupt:
        print(f"pbgreen {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
