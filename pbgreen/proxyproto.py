"""HAProxy's PROXY protocol, versions 1 and 2: parse the header a proxy sends first.

How it works. A layer-4 proxy (HAProxy ``send-proxy`` / ``send-proxy-v2``,
nginx ``proxy_protocol on``) opens its own TCP connection to the server, so
the server's socket sees the proxy, not the client. With the PROXY protocol
the proxy writes one header before any byte of the client's stream, saying
who the client is. This module is sans-I/O: ``parse(data)`` looks at the
bytes received so far and returns

* ``None``: not enough bytes yet, and every byte given belongs to the header
  (so a driver may consume them all and wait for more), or
* ``(header, rest)``: a complete ``ProxyHeader`` and the bytes after it, or

raises ``ProxyHeaderError`` as soon as the bytes cannot be a valid header
(the first byte already tells a wrong signature). Sizes are checked before
waiting for more: a version 1 line longer than ``V1_MAX_LENGTH`` bytes, or
a version 2 header announcing more than ``V2_MAX_LENGTH`` bytes after its
fixed part, is refused without buffering the rest.

The header is trusted only when the server was told to expect one
(``PBServer(proxy_protocol=True)``); otherwise these bytes are just bytes
that are not PB.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import ProtocolError

__all__ = ["ProxyHeader", "ProxyHeaderError", "parse", "V1_MAX_LENGTH", "V2_MAX_LENGTH",
           "V2_SIGNATURE", "V1_PREFIX"]

#: Every version 1 header starts with these bytes.
V1_PREFIX = b"PROXY "
#: The longest version 1 header, its CRLF included (HAProxy's specification).
V1_MAX_LENGTH = 107
#: The twelve bytes every version 2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The fixed part of a version 2 header: signature, version/command, family, length.
V2_FIXED_LENGTH = 16
#: The most bytes a version 2 header may announce after its fixed part
#: (addresses and TLVs). The field allows 65,535; a proxy sends far fewer.
V2_MAX_LENGTH = 4096

_V1_FAMILIES = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}
# version 2 families and the length of their address block
_V2_INET = 0x1
_V2_INET6 = 0x2
_V2_UNIX = 0x3
_V2_ADDRESS_LENGTH = {0x0: 0, _V2_INET: 12, _V2_INET6: 36, _V2_UNIX: 216}


class ProxyHeaderError(ProtocolError):
    """The bytes at the start of a connection are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY protocol header says.

    Attributes:
        version: 1 or 2.
        source: the real client's ``(host, port)``, or ``None`` when the
            header does not name one (version 2 ``LOCAL``, version 1
            ``UNKNOWN``, an unspecified or UNIX family): then the socket's
            own peer is the one to report.
        destination: the address the client connected to, or ``None``.
        length: the bytes the header took on the wire.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int


def parse(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    """Parse the header at the start of ``data``.

    Returns ``(header, rest)`` once the header is complete, ``None`` while
    more bytes are needed (every byte of ``data`` then belongs to the
    header); raises ``ProxyHeaderError`` saying what is wrong.
    """
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise _not_a_header(data)


def _not_a_header(data: bytes) -> ProxyHeaderError:
    return ProxyHeaderError(f"no PROXY protocol header: the connection starts with "
                            f"{bytes(data[:16])!r}, not 'PROXY ' (v1) or the v2 signature")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    start = bytes(data[:len(V1_PREFIX)])
    if not V1_PREFIX.startswith(start):
        raise _not_a_header(data)
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX_LENGTH} bytes "
                                   "(no CRLF)")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyHeaderError("PROXY v1 header with a stray CR or LF before its CRLF")
        return None
    length = end + 2
    line = bytes(data[len(V1_PREFIX):end])
    fields = line.split(b" ")
    if fields[0] == b"UNKNOWN":  # whatever follows is to be ignored
        return ProxyHeader(1, None, None, length), data[length:]
    family = _V1_FAMILIES.get(fields[0])
    if family is None:
        raise ProxyHeaderError(f"PROXY v1 header with protocol {fields[0]!r}: expected TCP4, "
                               "TCP6 or UNKNOWN")
    if len(fields) != 5:
        raise ProxyHeaderError(f"PROXY v1 header {line!r}: expected 'PROTO SRC DST SPORT "
                               "DPORT', single spaces")
    source_host = _v1_address(fields[1], family)
    destination_host = _v1_address(fields[2], family)
    source = (source_host, _v1_port(fields[3]))
    destination = (destination_host, _v1_port(fields[4]))
    return ProxyHeader(1, source, destination, length), data[length:]


def _v1_address(text: bytes, family: type) -> str:
    try:
        return str(family(text.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        kind = "IPv4" if family is ipaddress.IPv4Address else "IPv6"
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not an {kind} address") from None


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0:1] == b"0"):
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: port {port} is past 65535")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    start = bytes(data[:len(V2_SIGNATURE)])
    if not V2_SIGNATURE.startswith(start):
        raise _not_a_header(data)
    if len(data) < V2_FIXED_LENGTH:
        return None
    version_command, family_transport, length = struct.unpack_from("!BBH", data, 12)
    version, command = version_command >> 4, version_command & 0xF
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 signature with version {version}: expected 2")
    if command > 1:
        raise ProxyHeaderError(f"PROXY v2 header with command {command:#x}: expected LOCAL "
                               "(0) or PROXY (1)")
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v2 header announces {length} bytes of addresses and "
                               f"TLVs; at most {V2_MAX_LENGTH} are accepted")
    family, transport = family_transport >> 4, family_transport & 0xF
    if family not in _V2_ADDRESS_LENGTH or transport > 2:
        raise ProxyHeaderError(f"PROXY v2 header with unknown family/transport byte "
                               f"{family_transport:#04x}")
    total = V2_FIXED_LENGTH + length
    if len(data) < total:
        return None
    rest = data[total:]
    if command == 0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(2, None, None, total), rest
    needed = _V2_ADDRESS_LENGTH[family]
    if length < needed:
        raise ProxyHeaderError(f"PROXY v2 header too short for its family: {length} bytes, "
                               f"{needed} needed for the addresses")
    _check_tlvs(data[V2_FIXED_LENGTH + needed:total])
    body = bytes(data[V2_FIXED_LENGTH:V2_FIXED_LENGTH + needed])
    if family == _V2_INET:
        source_host, destination_host, source_port, destination_port = struct.unpack(
            "!4s4sHH", body)
        to_text = ipaddress.IPv4Address
    elif family == _V2_INET6:
        source_host, destination_host, source_port, destination_port = struct.unpack(
            "!16s16sHH", body)
        to_text = ipaddress.IPv6Address
    else:  # unspecified or UNIX: no TCP peer to report, keep the socket's own
        return ProxyHeader(2, None, None, total), rest
    return ProxyHeader(2, (str(to_text(source_host)), source_port),
                       (str(to_text(destination_host)), destination_port), total), rest


def _check_tlvs(tlvs: bytes) -> None:
    """Each TLV (type, 2-byte length, value) must fit in what the header announced."""
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise ProxyHeaderError("PROXY v2 header ends inside a TLV's type and length")
        (size,) = struct.unpack_from("!H", tlvs, offset + 1)
        offset += 3 + size
        if offset > len(tlvs):
            raise ProxyHeaderError("PROXY v2 header with a TLV longer than the header")
