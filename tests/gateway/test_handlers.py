"""The consumer's dispatch table and the declared client messages name the same types."""

import protocol
from gateway.consumers import HANDLERS


def test_every_declared_client_message_has_a_handler():
    assert set(protocol.CLIENT_MESSAGES) - set(HANDLERS) == set()


def test_every_handler_serves_a_declared_client_message():
    assert set(HANDLERS) - set(protocol.CLIENT_MESSAGES) == set()
