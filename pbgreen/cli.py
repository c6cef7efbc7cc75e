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
import ast
import errno
import getpass
import importlib
import ipaddress
import json
import logging
import math
import os
import re
import signal
import socket
import ssl
import sys
import time
import traceback
from typing import Any, NoReturn, Sequence

from . import portno

__all__ = ["main", "load_object", "parse_value"]

#: The environment variable ``pbgreen call --user`` reads the password from.
PASSWORD_VARIABLE = "PBGREEN_PASSWORD"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: With --workers, every line names its process too.
WORKERS_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

log = logging.getLogger("pbgreen.cli")


class _Fail(Exception):
    """An everyday mistake: one line on stderr, then exit with ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


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


# ----------------------------------------------------------------------------- arguments


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


def _port_number(text: str, *, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not low <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number ({low} to 65535), got {text!r}")
    return port


def _listen_port(text: str) -> int:
    return _port_number(text, allow_zero=True)


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (this machine) or ``HOST`` (port 8787)."""
    text = text.strip()
    if text.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, got {text!r}: did you mean 127.0.0.1:{text}?")
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\[\]]+)\](?::(.*))?", text)
        if not match:
            raise argparse.ArgumentTypeError(
                f"expected [IPV6]:PORT, e.g. [::1]:{portno}, got {text!r}")
        host, port = match[1], match[2]
        if port is None:
            return host, portno
    elif text.count(":") > 1:
        address, _, last = text.rpartition(":")
        meant = f"[{address}]:{last}" if last.isdigit() and _is_ipv6(address) \
            else f"[{text}]:{portno}"
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, got {text!r}: an IPv6 address goes in brackets, "
            f"as in {meant}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            return text, portno
    try:
        number = _port_number(port, allow_zero=False)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, got {text!r}: {port!r} is not a port number (1 to 65535)") \
            from None
    return host or "127.0.0.1", number


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _show(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return value


def _timeout(text: str) -> float:
    return _seconds(text, zero=False)


def _grace(text: str) -> float:
    return _seconds(text, zero=True)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of processes, 0 (one per CPU) or "
                                         f"more, got {text!r}")
    return value


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def _os_reason(exc: OSError) -> str:
    """What went wrong, in words, without ``[Errno N]`` or the address gevent appends."""
    if exc.errno and exc.errno > 0 and not exc.strerror:
        text = os.strerror(exc.errno)
    else:
        text = str(exc.strerror or exc)
    text = re.sub(r": \(.*\)$", "", text)  # gevent: "...: ('host', 8800)"
    text = re.sub(r"^cannot connect to \S+: ", "", text)  # PBClient's own prefix
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({text})"
    return text


# ----------------------------------------------------------------------------- TLS


def _check_readable(path: str, option: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _Fail(f"cannot read {option} file {path!r}: {_os_reason(exc)}") from None


def _holds_certificate(path: str) -> bool:
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError):
        return False
    return True


class _Encrypted(Exception):
    pass


def _server_context(cert: str, key: str) -> ssl.SSLContext:
    _check_readable(cert, "--tls-cert")
    _check_readable(key, "--tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def no_passphrase() -> NoReturn:
        raise _Encrypted
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except _Encrypted:
        raise _Fail(f"--tls-key file {key!r} is encrypted with a passphrase; "
                    "pbgreen serve needs an unencrypted key") from None
    except OSError as exc:  # ssl.SSLError too
        if not _holds_certificate(cert):
            raise _Fail(f"--tls-cert file {cert!r} holds no PEM certificate") from None
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise _Fail(f"--tls-key file {key!r} is not the key of the certificate in "
                        f"{cert!r}") from None
        raise _Fail(f"--tls-key file {key!r} holds no PEM private key") from None
    return context


def _client_context(cafile: str) -> ssl.SSLContext:
    _check_readable(cafile, "--tls-ca")
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ValueError):
        raise _Fail(f"--tls-ca file {cafile!r} holds no PEM certificate") from None


# ----------------------------------------------------------------------------- serve


def _configure_logging(level: str, log_format: str = LOG_FORMAT) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr, format=log_format,
                        force=True)


def _listen_problem(exc: OSError, where: str, port: int) -> str:
    """One line for an ``OSError`` raised while binding ``where``."""
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = " (is another server running there? --port 0 picks a free port)"
    elif exc.errno == errno.EACCES and 0 < port < 1024:
        hint = " (ports below 1024 need privileges)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = " (no interface of this machine has that address)"
    return f"cannot listen on {where}: {_os_reason(exc)}{hint}"


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PBServer`` keyword arguments the options ask for (plain values only)."""
    options: dict[str, Any] = {"unsafeTracebacks": args.unsafe_tracebacks}
    if args.max_connections is not None:
        options["max_connections"] = args.max_connections
    if args.proxy_protocol:
        options["proxy_protocol"] = True
    return options


def _serve(args: argparse.Namespace) -> int:
    from .server import PBServer

    _configure_logging(args.log_level,
                       LOG_FORMAT if args.workers is None else WORKERS_LOG_FORMAT)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise _Fail("--tls-cert and --tls-key go together")
    context = _server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    host = args.host[1:-1] if args.host.startswith("[") and args.host.endswith("]") else args.host
    if args.workers is not None:
        return _serve_workers(args, host, context is not None)
    root = _load_root(args.target)
    options = _server_options(args)
    if args.backlog is not None:
        options["backlog"] = args.backlog
    try:
        server = PBServer(root, port=args.port, host=host, ssl_context=context, **options)
        server.start()
    except OSError as exc:
        raise _Fail(_listen_problem(exc, _show(host, args.port), args.port)) from None
    _print_serving(args.target, server.address, context is not None)
    status = run_until_stopped(server, args.graceful_timeout)
    log.info("stopped")
    return status


def _print_serving(target: str, address: tuple[str, int], tls: bool, workers: int = 0) -> None:
    """The one stdout line saying where we listen (tests and scripts read the port from it)."""
    bound_host, port = address[:2]
    print(f"pbgreen: serving {target} on {_show(bound_host, port)}{' (TLS)' if tls else ''}"
          f"{f' ({workers} workers)' if workers else ''}", flush=True)


def run_until_stopped(server: Any, graceful_timeout: float,
                      signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                      lifeline_fd: int | None = None, second_signal_hurries: bool = True) -> int:
    """Serve until one of ``signals`` (or EOF on ``lifeline_fd``), then stop gracefully.

    A second signal during the graceful stop exits the process at once with
    status 1, unless ``second_signal_hurries`` is false (a worker: a SIGTERM
    sent to the whole process group and the one its supervisor relays are
    the same request). Returns 0, or 1 if stopping failed.
    """
    import gevent
    from gevent.event import Event
    from gevent.socket import wait_read

    # Our own handlers rather than serve_forever's, so the stop uses
    # --graceful-timeout and a second signal can cut it short.
    signals_seen: list[str] = []
    stopped = Event()
    status = [0]

    def stop(reason: str) -> None:
        if signals_seen and not second_signal_hurries:
            return
        if signals_seen:  # a second Ctrl-C: do not wait for the running calls
            log.warning("%s again: exiting without waiting for running calls", reason)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        signals_seen.append(reason)
        log.info("%s: stopping; running calls have up to %g s to finish", reason,
                 graceful_timeout)
        try:
            server.stop(timeout=graceful_timeout)
        except Exception:
            log.exception("stopping the server failed")
            status[0] = 1
        finally:
            stopped.set()

    for signum in signals:
        gevent.signal_handler(signum, lambda signum: stop(signal.Signals(signum).name), signum)
    if lifeline_fd is not None:
        def watch_lifeline() -> None:
            while True:
                wait_read(lifeline_fd)
                if not os.read(lifeline_fd, 1):  # end of file: the supervisor is gone
                    stop("supervisor gone")
                    return
        watcher = gevent.spawn(watch_lifeline)
    stopped.wait()
    if lifeline_fd is not None:
        watcher.kill()
    return status[0]


def _serve_workers(args: argparse.Namespace, host: str, tls: bool) -> int:
    from .workers import WorkerPool, WorkerStartError

    pool = WorkerPool(args.target, port=args.port, host=host, workers=args.workers,
                      graceful_timeout=args.graceful_timeout,
                      backlog=1024 if args.backlog is None else args.backlog,
                      tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level,
                      **_server_options(args))
    try:
        pool.start()
    except OSError as exc:
        raise _Fail(_listen_problem(exc, _show(host, args.port), args.port)) from None
    except WorkerStartError as exc:  # the worker said why on stderr, in one line
        return exc.status
    _print_serving(args.target, pool.address, tls, pool.workers)
    status = pool.serve_forever()
    log.info("stopped")
    return status


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
