"""Fakes on 127.0.0.1 that speak HTTP/1.1 byte by byte, for what aiohttp's server will not do.

``RawUpstream`` answers with whatever bytes a test writes (header values aiohttp refuses to
send, a connection dropped after a request was read); ``ForwardProxy`` is a forward proxy
that counts the CONNECT and absolute-form requests it passes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from relhelp import GUARD_S

from upstream_support import reply_stream


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    connection: int
    """Which connection it came on: 1 for the first the server accepted, and so on."""
    index: int
    """0 for the first request on its connection, 1 for the second, ..."""

    def json(self) -> Any:
        return json.loads(self.body)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """One request (a ``Content-Length`` body, as aiohttp's client sends); None at the end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *rest = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for header in rest:
        if header:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def drop(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    """Close the connection without an answer: with a FIN, or with an RST."""
    if rst:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def response(status: int, body: bytes, headers: list[tuple[str, bytes]] | None = None,
             content_type: str = "application/json") -> bytes:
    """A whole response with a ``Content-Length``; header values as raw bytes."""
    head = f"HTTP/1.1 {status} Status\r\nContent-Type: {content_type}\r\n".encode()
    for name, value in headers or []:
        head += name.encode("latin-1") + b": " + value + b"\r\n"
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n" if data else b""


END = b"0\r\n\r\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def stream_response(text: str) -> bytes:
    """A whole streamed reply of ``text``, the body's end in the same write."""
    return STREAM_HEAD + chunked(reply_stream([text])) + END


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


class _Served:
    """Serves ``handle`` on 127.0.0.1; at the end every connection is closed and its task
    ended, so that no transport is left for the garbage collector to warn about."""

    port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        tasks: set[asyncio.Task[Any]] = set()
        writers: set[asyncio.StreamWriter] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            writers.add(writer)
            try:
                await self.handle(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield
        finally:
            server.close()
            for writer in writers:
                writer.close()  # its reads end: its task returns
            if tasks:
                await asyncio.wait(tasks, timeout=GUARD_S)
            await server.wait_closed()


@dataclass
class RawUpstream(_Served):
    """Reads requests one after another on each connection; ``answer`` writes (or drops)."""

    answer: Answer
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        index = 0
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                parsed = await read_request(reader)
                if parsed is None:
                    break
                request = Request(*parsed, connection=connection, index=index)
                self.requests.append(request)
                index += 1
                await self.answer(request, writer)
                await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@dataclass
class ForwardProxy(_Served):
    """A forward proxy: CONNECT tunnels, and absolute-form requests sent on with
    ``Connection: close`` (one request per connection, enough for a test)."""

    connects: list[str] = field(default_factory=list)
    """The targets of the CONNECT requests (``host:port``)."""
    absolute: list[str] = field(default_factory=list)
    """The targets of the absolute-form requests (``http://host:port/path``)."""
    credentials: list[str | None] = field(default_factory=list)
    """The ``Proxy-Authorization`` of each request, None when it had none."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        line, *headers = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ")
        authorization = [h for h in headers if h.lower().startswith("proxy-authorization:")]
        self.credentials.append(authorization[0].partition(":")[2].strip() if authorization
                                else None)
        if method == "CONNECT":
            self.connects.append(target)
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
            return
        self.absolute.append(target)
        url = urlsplit(target)
        assert url.hostname is not None and url.port is not None
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
        kept = [h for h in headers if h and h.split(":")[0].lower() not in (
            "connection", "proxy-connection", "keep-alive", "proxy-authorization")]
        origin_form = url.path + (f"?{url.query}" if url.query else "")
        up_writer.write(
            "\r\n".join([f"{method} {origin_form} {version}", *kept, "Connection: close", "", ""])
            .encode("latin-1")
        )
        body = asyncio.ensure_future(_pipe(reader, up_writer))  # the body, and the rest
        try:
            # the answer's head gets "Connection: close" too: the client must not reuse this
            answer_head = await up_reader.readuntil(b"\r\n\r\n")
            writer.write(answer_head[:-2] + b"Connection: close\r\n\r\n")
            await _pipe(up_reader, writer)
        finally:
            body.cancel()
            up_writer.close()
