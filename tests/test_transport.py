"""SSEResponse: what reaches the socket, write by write (one write is one ``send(2)``)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request

from tokenstream.engine.clock import FakeClock
from tokenstream.sse.transport import ClientGone, SSEResponse


class RecordingTransport(asyncio.Transport):
    """A socket that takes everything at once and records each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.writes.append(b"".join(list_of_data))

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _response(**options: Any) -> tuple[SSEResponse, RecordingTransport]:
    transport = RecordingTransport()
    protocol = mock.Mock(transport=transport, _paused=False, ssl_context=None)
    writer = StreamWriter(protocol, asyncio.get_running_loop())
    request = make_mocked_request(
        "GET", "/v1/stream", writer=writer, transport=transport, protocol=protocol
    )
    return SSEResponse(request, FakeClock(), **options), transport


EVENT = b"data: hi\n\n"
FRAMED = b"a\r\ndata: hi\n\n\r\n"  # the event as one HTTP/1.1 chunk


async def test_headers_go_out_at_prepare_in_a_write_of_their_own() -> None:
    sse, transport = _response()
    await sse.prepare()
    (head,) = transport.writes  # before any event
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/event-stream" in head
    assert head.endswith(b"\r\n\r\n")
    assert sse.write_nowait(EVENT)
    assert transport.writes[1:] == [FRAMED]


async def test_close_writes_the_ending_and_the_last_chunk_together() -> None:
    sse, transport = _response(send_timeout=5.0, max_buffered=1 << 16)
    await sse.prepare()
    await sse.close(b"data: [DONE]\n\n")
    assert transport.writes[1:] == [b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]
    assert sse.bytes_sent == len(b"data: [DONE]\n\n")


async def test_a_stream_ended_at_once_is_two_writes_the_headers_then_the_ending() -> None:
    sse, transport = _response()
    await sse.prepare()
    await sse.close(EVENT)
    head, ending = transport.writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert ending == FRAMED + b"0\r\n\r\n"


async def test_a_closing_transport_means_the_client_is_gone() -> None:
    sse, transport = _response()
    await sse.prepare()
    transport.closing = True
    try:
        sse.write_nowait(EVENT)
    except ClientGone:
        pass
    else:
        raise AssertionError("write_nowait wrote to a closing transport")
    try:
        await sse.close(EVENT)
    except ClientGone:
        pass
    else:
        raise AssertionError("close wrote to a closing transport")
