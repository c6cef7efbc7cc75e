"""``pbgreen serve``: TLS contexts, logging, and serving until a signal.

``run_until_stopped`` is the serve loop shared with every ``--workers``
worker (``_worker``): serve until SIGTERM/SIGINT (or the supervisor's
lifeline closes), then stop gracefully.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import ssl
import sys
from typing import Any, NoReturn, Sequence

from ._cli_args import LOG_FORMAT, WORKERS_LOG_FORMAT, _Fail, _os_reason, _show
from ._cli_load import _load_root

log = logging.getLogger("pbgreen.cli")

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
