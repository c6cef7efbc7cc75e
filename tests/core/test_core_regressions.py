"""Regressions in the sans-I/O core (no sockets, no hub).

Defect 5 (December 2026): ``Broker.receive_data`` is meant to return events
or raise ``ProtocolError``; a reply whose request id is a list raised
``TypeError`` (an unhashable id looked up in a set), which killed the reader
greenlet instead of closing the connection cleanly.
"""

from __future__ import annotations

import pytest

from pbgreen import banana, flavors
from pbgreen.errors import ProtocolError
from pbgreen.protocol import Broker

OFFER = bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65")  # the acceptor's ['pb', 'none']
CHOOSE_PB = bytes.fromhex("02 82 70 62")                       # the connector's 'pb'


class Root(flavors.Root):
    def remote_add(self, a, b):
        return a + b


def _connected(role):
    """A broker that finished the handshake (dialect ``pb``)."""
    if role == "connector":
        broker = Broker(is_client=True)
        broker.receive_data(OFFER)
    else:
        broker = Broker(is_client=False, root=Root())
        broker.receive_data(CHOOSE_PB)
    assert broker.dialect == b"pb"
    broker.data_to_send()
    return broker


MALFORMED = {
    "answer with a list id": [b"answer", [], 1],
    "error with a list id": [b"error", [], 1],
    "answer with a nested list id": [b"answer", [[1]], [b"list"]],
    "error with a list id holding an int": [b"error", [1], [b"list"]],
    "answer with a list id, wrong field count": [b"answer", [], 1, 2],
}


@pytest.mark.parametrize("role", ["connector", "acceptor"])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_message_raises_protocol_error_and_nothing_else(role, name):
    broker = _connected(role)
    data = banana.encode(MALFORMED[name], vocab=True)
    with pytest.raises(ProtocolError):
        broker.receive_data(data)


@pytest.mark.parametrize("role", ["connector", "acceptor"])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_message_fed_one_byte_at_a_time_raises_protocol_error(role, name):
    broker = _connected(role)
    data = banana.encode(MALFORMED[name], vocab=True)
    with pytest.raises(ProtocolError):
        for i in range(len(data)):
            broker.receive_data(data[i:i + 1])


@pytest.mark.parametrize("role", ["connector", "acceptor"])
def test_a_well_formed_message_after_the_handshake_is_accepted(role):
    # The control: the same setup takes a proper message without complaint.
    broker = _connected(role)
    assert broker.receive_data(banana.encode([b"version", 6], vocab=True)) == []
