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


async def test_headers_go_at_once_by_default() -> None:
    sse, transport = _response()
    await sse.prepare()
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")
    assert sse.write_nowait(EVENT)
    assert transport.writes[1:] == [FRAMED]


async def test_held_headers_go_with_the_first_event_in_one_write() -> None:
    sse, transport = _response()
    await sse.prepare(hold_headers=True)
    assert transport.writes == []
    assert sse.write_nowait(EVENT)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"text/event-stream" in head
    assert body == FRAMED
    sse.flush_headers()  # nothing more: they went out
    assert sse.write_nowait(EVENT)
    assert transport.writes[1:] == [FRAMED]


async def test_flush_sends_held_headers_when_no_event_is_due() -> None:
    sse, transport = _response()
    await sse.prepare(hold_headers=True)
    sse.flush_headers()
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")
    sse.flush_headers()
    assert len(transport.writes) == 1


async def test_close_writes_the_ending_and_the_last_chunk_together() -> None:
    sse, transport = _response(send_timeout=5.0, max_buffered=1 << 16)
    await sse.prepare()
    await sse.close(b"data: [DONE]\n\n")
    assert transport.writes[1:] == [b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]
    assert sse.bytes_sent == len(b"data: [DONE]\n\n")


async def test_close_with_held_headers_is_one_write() -> None:
    sse, transport = _response()
    await sse.prepare(hold_headers=True)
    await sse.close(EVENT)
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(FRAMED + b"0\r\n\r\n")


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
