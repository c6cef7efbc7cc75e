"""Argument types and shared pieces of the ``pbgreen`` command line (``cli``).

Each ``type=`` function turns one command-line string into a value or
raises ``argparse.ArgumentTypeError`` with a one-line reason; ``_Fail`` is
the everyday mistake ``cli.main`` reports as one line with its exit status.
"""

from __future__ import annotations

import argparse
import ast
import ipaddress
import json
import math
import os
import re
import socket
from typing import Any


from . import portno

#: The environment variable ``pbgreen call --user`` reads the password from.
PASSWORD_VARIABLE = "PBGREEN_PASSWORD"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: With --workers, every line names its process too.
WORKERS_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class _Fail(Exception):
    """An everyday mistake: one line on stderr, then exit with ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


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
