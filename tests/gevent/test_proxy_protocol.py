"""PBServer(proxy_protocol=True) over real sockets: a proxy in front writes the header."""

from __future__ import annotations

import ipaddress
import logging
import struct

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen.proxyproto import V2_SIGNATURE


class Peers(pb.Root):
    """Each connection's root answers with the peer its connection reports."""

    def rootObject(self, broker):
        return PeerOf(broker)


class PeerOf(pb.Referenceable):
    def __init__(self, broker):
        self.broker = broker

    def remote_peer(self):
        return tuple(self.broker.peer[:2])


def v1(address):
    host, port = address
    return f"PROXY TCP4 {host} 127.0.0.1 {port} 8800\r\n".encode()


def v2(family, source, destination=None, tlvs=b"", command=1):
    kind = ipaddress.ip_address(source[0])
    destination = destination or (str(kind), 8800)
    body = (kind.packed + ipaddress.ip_address(destination[0]).packed
            + struct.pack("!HH", source[1], destination[1]) + tlvs)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


CLAIMED = {
    "v1 TCP4": (lambda address: b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 8800\r\n",
                ("203.0.113.7", 4242)),
    "v1 TCP6": (lambda address: b"PROXY TCP6 2001:db8::7 ::1 4242 8800\r\n",
                ("2001:db8::7", 4242)),
    "v2 IPv4": (lambda address: v2(0x11, ("203.0.113.7", 4242)), ("203.0.113.7", 4242)),
    "v2 IPv6": (lambda address: v2(0x21, ("2001:db8::7", 4242)), ("2001:db8::7", 4242)),
    "v2 with TLVs": (lambda address: v2(0x11, ("203.0.113.7", 4242),
                                        tlvs=b"\x01\x00\x02h2" + b"\x05\x00\x10" + b"u" * 16),
                     ("203.0.113.7", 4242)),
}


@pytest.mark.parametrize("name", CLAIMED)
def test_peer_is_the_client_the_header_names(name, pb_server, pb_client, proxy):
    header, expected = CLAIMED[name]
    server = pb_server(Peers(), proxy_protocol=True, handshake_timeout=5)
    front = proxy(server.address, header=header)
    root = pb_client(front.port).getRootObject()
    assert root.callRemote("peer") == expected
    assert root.callRemote("peer") == expected  # the connection keeps working


def test_the_real_client_port_comes_through(pb_server, pb_client, proxy):
    """As HAProxy does: the header names the client's own address and port."""
    server = pb_server(Peers(), proxy_protocol=True)
    front = proxy(server.address, header=v1)
    client = pb_client(front.port)
    assert client.getRootObject().callRemote("peer") == \
        client.connection.sock.getsockname()[:2]


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", v2(0x11, ("203.0.113.7", 1), command=0)],
                         ids=["v1 UNKNOWN", "v2 LOCAL"])
def test_unknown_and_local_keep_the_sockets_own_peer(header, pb_server, pb_client, proxy):
    server = pb_server(Peers(), proxy_protocol=True)
    front = proxy(server.address, header=lambda address: header)
    root = pb_client(front.port).getRootObject()
    upstream = front.sockets[1]  # the proxy's own connection to the server
    assert root.callRemote("peer") == upstream.getsockname()[:2]


def test_header_then_tls(pb_server, pb_client, proxy, server_context, client_context):
    """The header and the ClientHello in one segment: only the header's bytes are taken."""
    server = pb_server(Peers(), proxy_protocol=True, ssl_context=server_context,
                       handshake_timeout=5)
    front = proxy(server.address, header=CLAIMED["v2 IPv4"][0], header_with_data=True)
    root = pb_client(front.port, ssl_context=client_context).getRootObject()
    assert root.callRemote("peer") == ("203.0.113.7", 4242)


def _closed_without_greeting(sock):
    """True if the server closed ``sock`` (a FIN, or a RST for bytes it left unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


BAD = {
    "no header, PB": (b"\x04\x80\x82pb", "no PROXY protocol header: the connection starts with"),
    "v1 too long": (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107 bytes"),
    "v1 bad address": (b"PROXY TCP4 300.1.1.1 1.1.1.1 1 2\r\n", "is not an IPv4 address"),
    "v2 too long": (V2_SIGNATURE + b"\x21\x11\x10\x01", "announces 4097 bytes"),
    "v2 cut short": (v2(0x11, ("203.0.113.7", 1))[:20], "closed after 20 bytes"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_header_closes_that_connection_with_a_warning(name, pb_server, pb_client, caplog):
    data, words = BAD[name]
    server = pb_server(Peers(), proxy_protocol=True, handshake_timeout=5)
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        if name == "v2 cut short":  # the sender goes away in the middle
            with socket.create_connection(server.address, timeout=10) as sock:
                sock.sendall(data)
                local = sock.getsockname()
            gevent.sleep(0)
        else:
            with socket.create_connection(server.address, timeout=10) as sock:
                local = sock.getsockname()
                sock.sendall(data)
                assert _closed_without_greeting(sock)
        message = _warning(caplog, words)
    assert str(local[1]) in message  # it names the socket's peer
    # every other connection carries on
    front_header = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 8800\r\n"
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(front_header)
        assert sock.recv(1)  # the PB greeting


def _warning(caplog, words, timeout=5.0):
    with gevent.Timeout(timeout, AssertionError(f"no WARNING with {words!r}: {caplog.text}")):
        while True:
            for record in caplog.records:
                if record.levelno == logging.WARNING and words in record.getMessage():
                    return record.getMessage()
            gevent.sleep(0.01)


def test_no_header_within_the_handshake_timeout(pb_server, caplog):
    server = pb_server(Peers(), proxy_protocol=True, handshake_timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(100) == b""  # the server waited for the header, then closed
            local = sock.getsockname()
        message = _warning(caplog, "no complete PROXY protocol header within 0.3 s")
    assert str(local[1]) in message


def test_a_pb_client_straight_to_a_proxy_protocol_server_is_refused(pb_server):
    server = pb_server(Peers(), proxy_protocol=True, handshake_timeout=0.3)
    with pytest.raises((OSError, TimeoutError)):
        pb.PBClient("127.0.0.1", server.address[1], timeout=10).getRootObject()


def test_without_the_option_a_header_is_never_trusted(pb_server, proxy, caplog):
    server = pb_server(Peers(), handshake_timeout=5)
    front = proxy(server.address, header=CLAIMED["v1 TCP4"][0])
    with caplog.at_level(logging.WARNING):
        with pytest.raises(OSError):  # connection lost, or refused at the handshake
            with pb.PBClient("127.0.0.1", front.port, timeout=10) as client:
                client.getRootObject().callRemote("peer")
        _warning(caplog, "protocol error")
    # the same header through the same server is never taken for the peer: a
    # plain client still works and is reported as itself
    with pb.PBClient("127.0.0.1", server.address[1], timeout=10) as client:
        assert client.getRootObject().callRemote("peer") == \
            client.connection.sock.getsockname()[:2]


@pytest.mark.parametrize("header", [CLAIMED["v1 TCP6"][0](None), CLAIMED["v2 with TLVs"][0](None)],
                         ids=["v1", "v2"])
def test_a_header_arriving_in_pieces(header, pb_server, caplog):
    """Each piece is taken as it comes; the greeting follows the last one."""
    server = pb_server(Peers(), proxy_protocol=True, handshake_timeout=5)
    with caplog.at_level(logging.WARNING, logger="pbgreen.server"):
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(header), 7):
                sock.sendall(header[start:start + 7])
                gevent.sleep(0.005)  # separate segments, so the server reads them apart
            assert sock.recv(1)  # the PB greeting: the header was complete and accepted
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
