"""``pbgreen call``: connect, optionally log in, call one method, print the answer."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import ssl
import sys
import time
from typing import Any

from ._cli_args import PASSWORD_VARIABLE, _Fail, _os_reason, _show, parse_value
from ._cli_load import _import
from ._cli_serve import _client_context, _configure_logging

log = logging.getLogger("pbgreen.cli")

# ----------------------------------------------------------------------------- call


def _password(user: str, where: str) -> str:
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise _Fail(f"--user {user} needs a password: set {PASSWORD_VARIABLE}, or run from a "
                    "terminal to be asked for it")
    try:
        return getpass.getpass(f"password for {user} at {where}: ")
    except EOFError:
        raise _Fail("no password given") from None


def _connect_problem(exc: BaseException, host: str, port: int) -> str:
    """One line for an exception raised while connecting to ``host:port``."""
    where = _show(host, port)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS to {where}: the server's certificate is not trusted "
                f"({exc.verify_message}); give --tls-ca the certificate that signed it")
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake with {where} failed ({exc.reason or exc}): "
                "is it a TLS PB server?")
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot connect to {where}: {_os_reason(exc)}"
    text = str(exc)  # TimeoutError, ProtocolError, "server at capacity": they name the address
    if where not in text and f"{host}:{port}" not in text:
        text = f"cannot connect to {where}: {text}"
    return text


def _lost(exc: BaseException, where: str, phase: str) -> str:
    """One line for a connection that went away while ``phase`` was under way."""
    from .errors import ClosedByPeer, ProtocolError

    cause = exc.__cause__
    if isinstance(cause, ClosedByPeer):
        why = "the server closed it"
    elif isinstance(cause, ProtocolError):
        why = f"protocol error: {cause}"
    elif isinstance(cause, OSError) and cause.errno:
        why = _os_reason(cause)
    else:
        why = str(cause or exc)
    return f"connection to {where} lost while {phase}: {why}"


def _login(client: Any, user: str, password: str, where: str) -> Any:
    from .cred import UsernamePassword
    from .errors import CopiedFailure, LoginFailed, NoSuchMethod, UnauthorizedLogin

    try:
        return client.login(UsernamePassword(user.encode(), password.encode()))
    except LoginFailed as exc:
        message = exc.getErrorMessage() if isinstance(exc, CopiedFailure) else str(exc)
        if not message and isinstance(exc, UnauthorizedLogin):
            message = "unknown user or wrong password"
        raise _Fail(f"login as {user!r} at {where} refused: "
                    f"{message or type(exc).__name__}") from None
    except NoSuchMethod:
        raise _Fail(f"{where} takes no login (it serves a root object, not a portal): "
                    "drop --user") from None
    except CopiedFailure as exc:
        raise _Fail(f"login as {user!r} at {where} failed: {exc.type}: "
                    f"{exc.getErrorMessage()}") from None


def _call(args: argparse.Namespace) -> int:
    import gevent

    from .client import PBClient
    from .errors import CopiedFailure, InsecureJelly

    _configure_logging(args.log_level)  # the library's own warnings: we report errors ourselves
    host, port = args.address
    where = _show(host, port)
    kwargs = {}
    for item in args.kwarg:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _Fail(f"expected -k NAME=VALUE, got {item!r}")
        kwargs[name] = parse_value(value)
    for module in args.imports:
        _import(module)
    context = _client_context(args.tls_ca) if args.tls_ca else None
    password = _password(args.user, where) if args.user else None

    # Ctrl-C: KeyboardInterrupt in this greenlet, not in the hub (which would print it).
    gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(), KeyboardInterrupt)
    deadline = time.monotonic() + args.timeout
    try:
        # call_timeout: a pbgreen server learns the deadline with each call and stops
        # the method when it passes, even after we are gone.
        client = PBClient(host, port, timeout=args.timeout, ssl_context=context,
                          call_timeout=args.timeout)
    except (OSError, TimeoutError) as exc:  # ProtocolError, ssl.SSLError are OSErrors too
        problem = _connect_problem(exc, host, port)
        if context is None and isinstance(exc, TimeoutError) and "handshake" in problem:
            problem += " (if it serves TLS, give --tls-ca)"
        raise _Fail(problem) from None
    phase = f"logging in as {args.user!r}"
    timer = gevent.Timeout(max(0.0, deadline - time.monotonic()))
    timer.start()
    try:
        target = client.getRootObject()
        if args.user:
            target = _login(client, args.user, password or "", where)
        phase = f"calling {args.method}"
        answer = target.callRemote(args.method, *map(parse_value, args.args), **kwargs)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise _Fail(f"{phase} at {where} timed out after {args.timeout:g} s") from None
    except CopiedFailure as exc:
        print(f"remote error: {exc.type}: {exc.getErrorMessage()}", file=sys.stderr)
        if args.traceback:
            print(exc.remoteTraceback, file=sys.stderr, end="")
        return 1
    except InsecureJelly as exc:  # the answer holds something we may not rebuild
        hint = "" if args.imports or "setUnjellyable" not in str(exc) \
            else " (--import a module that does)"
        raise _Fail(f"{exc}{hint}", status=1) from None
    except TimeoutError:  # pb.CallTimeout: the same deadline, seen by PBClient first
        raise _Fail(f"{phase} at {where} timed out after {args.timeout:g} s") from None
    except OSError as exc:  # DeadReferenceError, PBConnectionLost, the socket's own
        raise _Fail(_lost(exc, where, phase)) from None
    finally:
        timer.close()
        client.close()
    if args.json:
        try:
            print(json.dumps(answer))
        except (TypeError, ValueError) as exc:
            raise _Fail(f"the answer is not JSON ({exc}); drop --json to print it as a "
                        "Python value", status=1) from None
    else:
        print(repr(answer))
    return 0
