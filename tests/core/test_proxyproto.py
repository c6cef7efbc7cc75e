"""The PROXY protocol parser (sans-I/O): bytes in, a header, "need more" or an error out."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pbgreen import proxyproto
from pbgreen.errors import ProtocolError
from pbgreen.proxyproto import (V1_MAX_LENGTH, V2_MAX_LENGTH, V2_SIGNATURE, ProxyHeader,
                                ProxyHeaderError, parse)

PB_BYTES = b"\x04\x80\x82pb"  # whatever follows the header stays untouched


def v2(command: int = 1, family: int = 0x11, body: bytes = b"", version: int = 2,
       length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", size) + body


def inet(src="192.0.2.1", dst="198.51.100.2", sport=51234, dport=8800) -> bytes:
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))


def inet6(src="2001:db8::1", dst="2001:db8::2", sport=40000, dport=8800) -> bytes:
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 8800\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 8800\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V2_INET = v2(body=inet())
V2_INET6 = v2(family=0x21, body=inet6())
V2_LOCAL = v2(command=0, family=0x00)
V2_TLVS = v2(body=inet() + tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0x05, b"x" * 40))

COMPLETE = {
    "v1 TCP4": (V1_TCP4, ProxyHeader(1, ("192.0.2.1", 51234), ("198.51.100.2", 8800),
                                      len(V1_TCP4))),
    "v1 TCP6": (V1_TCP6, ProxyHeader(1, ("2001:db8::1", 40000), ("2001:db8::2", 8800),
                                      len(V1_TCP6))),
    "v1 UNKNOWN": (V1_UNKNOWN, ProxyHeader(1, None, None, len(V1_UNKNOWN))),
    "v1 UNKNOWN with addresses": (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                                  ProxyHeader(1, None, None, 35)),
    "v2 IPv4": (V2_INET, ProxyHeader(2, ("192.0.2.1", 51234), ("198.51.100.2", 8800), 28)),
    "v2 IPv6": (V2_INET6, ProxyHeader(2, ("2001:db8::1", 40000), ("2001:db8::2", 8800), 52)),
    "v2 LOCAL": (V2_LOCAL, ProxyHeader(2, None, None, 16)),
    "v2 LOCAL with an address block": (v2(command=0, body=inet()),
                                       ProxyHeader(2, None, None, 28)),
    "v2 TLVs skipped": (V2_TLVS, ProxyHeader(2, ("192.0.2.1", 51234), ("198.51.100.2", 8800),
                                             len(V2_TLVS))),
    "v2 UNIX keeps the socket peer": (v2(family=0x31, body=b"\0" * 216),
                                      ProxyHeader(2, None, None, 232)),
    "v2 UNSPEC keeps the socket peer": (v2(family=0x00), ProxyHeader(2, None, None, 16)),
}


@pytest.mark.parametrize("name", COMPLETE)
def test_a_complete_header_and_the_bytes_after_it(name):
    data, expected = COMPLETE[name]
    assert parse(data + PB_BYTES) == (expected, PB_BYTES)
    assert parse(data) == (expected, b"")


@pytest.mark.parametrize("name", COMPLETE)
def test_every_truncation_asks_for_more(name):
    data, _ = COMPLETE[name]
    for end in range(len(data)):
        assert parse(data[:end]) is None, (name, end)


def test_bytearray_in():
    assert parse(bytearray(V1_TCP4))[0].source == ("192.0.2.1", 51234)


BAD = {
    "PB bytes": (b"\x02\x80\x82pb", "no PROXY protocol header"),
    "HTTP": (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    "lower case v1": (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY protocol header"),
    "v1 without the space": (b"PROXYTCP4", "no PROXY protocol header"),
    "wrong v2 signature": (V2_SIGNATURE[:6] + b"X" + V2_SIGNATURE[7:], "no PROXY protocol"),
    "v1 protocol": (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "expected TCP4, TCP6 or UNKNOWN"),
    "v1 missing port": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "single spaces"),
    "v1 double space": (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "single spaces"),
    "v1 IPv6 as TCP4": (b"PROXY TCP4 ::1 ::1 1 2\r\n", "not an IPv4 address"),
    "v1 IPv4 as TCP6": (b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n", "not an IPv6 address"),
    "v1 bad address": (b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "not an IPv4 address"),
    "v1 port past 65535": (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "past 65535"),
    "v1 port not a number": (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "not a port number"),
    "v1 port leading zero": (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "not a port number"),
    "v1 bare LF": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "stray CR or LF"),
    "v1 bare CR": (b"PROXY TCP4 1.2.3.4\r1.2.3.4 1 2", "stray CR or LF"),
    "v2 version 1": (v2(version=1, body=inet()), "version 1: expected 2"),
    "v2 command 2": (v2(command=2, body=inet()), "command 0x2"),
    "v2 family 4": (v2(family=0x41, body=inet()), "unknown family"),
    "v2 transport 3": (v2(family=0x13, body=inet()), "unknown family"),
    "v2 IPv4 too short": (v2(body=inet()[:11]), "too short for its family"),
    "v2 IPv6 too short": (v2(family=0x21, body=inet()), "too short for its family"),
    "v2 TLV past the end": (v2(body=inet() + tlv(1, b"abc")[:-1] + b""),
                            "TLV longer than the header"),
    "v2 TLV cut in its length": (v2(body=inet() + b"\x01\x00"), "inside a TLV"),
}


@pytest.mark.parametrize("name", BAD)
def test_malformed_headers_are_refused_saying_what_is_wrong(name):
    data, words = BAD[name]
    with pytest.raises(ProxyHeaderError, match=words):
        parse(data)


def test_a_header_error_is_a_protocol_error():
    assert issubclass(ProxyHeaderError, ProtocolError)


def test_a_wrong_first_byte_is_refused_at_once():
    with pytest.raises(ProxyHeaderError):
        parse(b"\x01")
    with pytest.raises(ProxyHeaderError):
        parse(b"PROXZ")
    with pytest.raises(ProxyHeaderError):
        parse(V2_SIGNATURE[:3] + b"\0")


def test_v1_at_its_limit_and_one_past():
    at_limit = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(at_limit) == V1_MAX_LENGTH == 107
    assert parse(at_limit) == (ProxyHeader(1, None, None, 107), b"")
    one_past = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n"
    with pytest.raises(ProxyHeaderError, match="longer than 107 bytes"):
        parse(one_past)
    # refused as soon as 107 bytes show no CRLF, without waiting for the rest
    with pytest.raises(ProxyHeaderError, match="longer than 107 bytes"):
        parse(one_past[:V1_MAX_LENGTH])
    assert parse(one_past[:V1_MAX_LENGTH - 1]) is None


def test_v2_length_at_its_limit_and_one_past():
    at_limit = v2(body=inet() + tlv(0xE0, b"v" * (V2_MAX_LENGTH - 12 - 3)))
    assert parse(at_limit)[0].length == 16 + V2_MAX_LENGTH
    one_past_fixed = v2(body=b"", length=V2_MAX_LENGTH + 1)
    assert len(one_past_fixed) == 16  # only the fixed part: refused before the rest comes
    with pytest.raises(ProxyHeaderError, match=f"announces {V2_MAX_LENGTH + 1} bytes"):
        parse(one_past_fixed)
    with pytest.raises(ProxyHeaderError, match="announces 65535 bytes"):
        parse(v2(length=0xFFFF))


def test_the_limits_are_documented():
    from pathlib import Path
    limits = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    assert f"{V1_MAX_LENGTH} bytes" in limits
    assert f"{V2_MAX_LENGTH:,} bytes" in limits
    assert proxyproto.V2_FIXED_LENGTH == 16
