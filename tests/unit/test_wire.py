"""The hand-written HTTP/1.1 answer reader, over a socketpair with captured bytes."""

from __future__ import annotations

import socket

import pytest

from orchestrator.replication.wire import ClosedError, ProtocolError, Wire, parse_head


def wire_with(data: bytes, close: bool = True) -> Wire:
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    if close:
        theirs.close()
    return Wire(ours)


@pytest.mark.parametrize("head, status, length, chunked, close", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: application/json", 200, 12,
     False, False),
    (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: close", 404, 0, False, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", 200, None, True, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3", 200, 3, False, True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive", 200, 3, False, False),
    (b"HTTP/1.1 200 OK", 200, None, False, True),  # to the end of the connection
])
def test_heads_are_parsed_by_what_framing_needs(head, status, length, chunked, close):
    parsed = parse_head(head)
    assert (parsed.status, parsed.length, parsed.chunked, parsed.close) == \
        (status, length, chunked, close)


@pytest.mark.parametrize("head", [b"SSH-2.0-OpenSSH", b"HTTP/1.1 abc OK",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: -1",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: x"])
def test_what_is_not_an_http_answer_is_refused(head):
    with pytest.raises(ProtocolError):
        parse_head(head)


def test_bodies_by_length_and_chunked_and_a_100_continue_skipped():
    wire = wire_with(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                     b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n", close=False)
    first = wire.read_head()
    assert first.status == 200 and wire.read_body(first) == b"hello"
    second = wire.read_head()
    assert second.status == 500 and wire.read_body(second) == b"abcde"
    assert wire.pending == 0


def test_a_connection_closed_before_an_answer_is_stale_and_inside_one_is_broken():
    with pytest.raises(ClosedError):
        wire_with(b"").read_head()
    with pytest.raises(ProtocolError) as info:
        wire_with(b"HTTP/1.1 200 OK\r\nContent-").read_head()
    assert not isinstance(info.value, ClosedError)
    short = wire_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError, match="7 bytes before the end"):
        short.read_body(short.read_head())


def test_body_bytes_received_with_the_head_are_relayed_first():
    wire = wire_with(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef")
    head = wire.read_head()  # one recv took the head and the body with it
    out, sink = socket.socketpair()
    assert wire.send_pending(out, 4) == 4 and sink.recv(16) == b"abcd"
    view = memoryview(bytearray(16))
    assert wire.readinto(view) == 2 and bytes(view[:2]) == b"ef" and head.length == 6
