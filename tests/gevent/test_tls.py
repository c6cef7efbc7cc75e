"""PB over TLS: a certificate made at test time with the openssl command."""

from __future__ import annotations

import logging
import ssl

import pytest

import pbgreen as pb


class Avatar(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return interfaces[0], Avatar(avatar_id), lambda: None


@pytest.fixture
def tls_server(pb_server, server_context):
    portal = pb.Portal(Realm(), [pb.InMemoryPasswordChecker(alice=b"secret")])
    return pb_server(portal, ssl_context=server_context, handshake_timeout=2)


def test_login_and_calls_over_tls(tls_server, pb_client, client_context):
    # The server speaks only TLS (a plain client fails: see below), so any
    # answer at all proves the connection is encrypted.
    client = pb_client(tls_server, ssl_context=client_context)
    avatar = client.login(pb.UsernamePassword(b"alice", b"secret"))
    assert avatar.callRemote("whoami") == b"alice"


def test_untrusted_certificate_is_a_clear_error(tls_server, pb_client, client_context):
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        pb.PBClient("127.0.0.1", tls_server.address[1], ssl_context=ssl.create_default_context(),
                    timeout=5)
    assert "not trusted" in " ".join(info.value.__notes__)
    assert pb_client(tls_server, ssl_context=client_context).login(
        pb.UsernamePassword(b"alice", b"secret")).callRemote("whoami") == b"alice"


def test_plain_client_against_tls_server_fails_cleanly(tls_server, pb_client, client_context,
                                                        caplog, wait_until):
    # Each side waits for the other to speak first: the client's timeout ends it.
    with caplog.at_level(logging.WARNING, logger="pbgreen"):
        with pytest.raises(TimeoutError):
            pb.PBClient("127.0.0.1", tls_server.address[1], timeout=0.5)
        # and the server drops that connection with a warning, not a traceback
        wait_until(lambda: any(r.levelno == logging.WARNING and r.name.startswith("pbgreen")
                               for r in caplog.records),
                   message=lambda: f"no warning from the server: {caplog.text!r}")
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in caplog.records)
    client = pb_client(tls_server, ssl_context=client_context)
    assert client.login(pb.UsernamePassword(b"alice", b"secret")).callRemote("whoami") == b"alice"


def test_tls_client_against_plain_server_fails_cleanly(pb_server, pb_client, client_context):
    server = pb_server(pb.Root())
    with pytest.raises(ssl.SSLError):
        pb.PBClient("127.0.0.1", server.address[1], ssl_context=client_context, timeout=5)
    assert pb_client(server).getRootObject() is not None
