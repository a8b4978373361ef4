"""The mirror's TCP listener: close() ends its handler threads before it
returns, logs a channel closed by the peer but not one closed by close(),
and still logs a handler's real failure. Real sockets on loopback."""

from __future__ import annotations

import logging
import threading

import pytest

from blizzard.cluster.ports import port_block
from blizzard.exceptions import ChannelClosedError
from blizzard.replication.physical.tcp import TcpMirrorTransport

TIMEOUT_S = 30.0  # generous: the machine may be loaded


class Handlers:
    """An ``on_channel`` that reads until its channel breaks, and says when it ended."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.received = threading.Event()
        self.ended = threading.Event()
        self.fail_on = fail_on

    def __call__(self, channel) -> None:
        try:
            while True:
                message = channel.receive(TIMEOUT_S)
                if message is None:
                    continue
                self.received.set()
                if bytes(message) == self.fail_on:
                    raise RuntimeError("a handler's own bug")
        finally:
            self.ended.set()


@pytest.fixture
def transport():
    return TcpMirrorTransport()


def _listen(transport, handler):
    return transport.listen(("127.0.0.1", port_block(1)), handler)


def test_close_returns_after_its_handlers_ended_and_says_nothing_of_it(transport, caplog):
    caplog.set_level(logging.DEBUG, logger="blizzard.mirror.tcp")
    handler = Handlers()
    listener = _listen(transport, handler)
    client = transport.connect(listener.address, TIMEOUT_S)
    client.send(b"hello")
    assert handler.received.wait(TIMEOUT_S)
    listener.close()
    assert handler.ended.is_set()  # no wait: close() joined the thread
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    assert "closed with the listener" in caplog.text  # at debug
    client.close()


def test_a_channel_closed_by_its_peer_is_still_logged(transport, caplog):
    caplog.set_level(logging.INFO, logger="blizzard.mirror.tcp")
    handler = Handlers()
    listener = _listen(transport, handler)
    try:
        client = transport.connect(listener.address, TIMEOUT_S)
        client.send(b"hello")
        assert handler.received.wait(TIMEOUT_S)
        client.close()
        assert handler.ended.wait(TIMEOUT_S)
    finally:
        listener.close()
    assert "closed by the peer" in caplog.text or "closed:" in caplog.text, caplog.text


def test_a_handler_failure_is_logged_even_while_closing(transport, caplog):
    caplog.set_level(logging.INFO, logger="blizzard.mirror.tcp")
    handler = Handlers(fail_on=b"boom")
    listener = _listen(transport, handler)
    client = transport.connect(listener.address, TIMEOUT_S)
    client.send(b"boom")
    assert handler.ended.wait(TIMEOUT_S)
    listener.close()
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures and "a handler's own bug" in caplog.text, caplog.text
    with pytest.raises(ChannelClosedError):  # the listener closed the channel after it
        client.receive(TIMEOUT_S)
    client.close()


def test_a_handler_may_close_its_own_listener(transport):
    ended = threading.Event()
    holder = {}

    def close_from_inside(channel) -> None:
        channel.receive(TIMEOUT_S)
        holder["listener"].close()  # must not wait for this very thread
        ended.set()

    listener = holder["listener"] = _listen(transport, close_from_inside)
    client = transport.connect(listener.address, TIMEOUT_S)
    client.send(b"close yourself")
    assert ended.wait(TIMEOUT_S)
    with pytest.raises(ChannelClosedError):
        client.receive(TIMEOUT_S)
    client.close()
    listener.close()  # a second close is harmless
