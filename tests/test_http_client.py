"""The upstream's HTTP/1.1 client: the response parser (vectors kept as data) and the pool,
against raw servers on both event loops (asyncio, and uvloop when installed)."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tokenstream.sources import http_client
from tokenstream.sources.http_client import (
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    HTTPClientError,
    ProtocolError,
    ResponseParser,
    ServerDisconnected,
)

from support import wait_for

VECTORS = json.loads((Path(__file__).parent / "vectors" / "http_responses.json").read_text())
CASES = VECTORS["cases"]


def _bytes(text: str) -> bytes:
    return text.encode("latin-1")


def _parse(pieces: Iterator[bytes], eof: bool) -> tuple[ResponseParser, bytes]:
    parser = ResponseParser()
    body = b"".join(parser.feed(piece) for piece in pieces)
    if eof:
        parser.eof()
    return parser, body


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_response_vectors(case: dict[str, Any]) -> None:
    data = _bytes(case["response"])
    eof = case.get("eof", False)
    feeds: list[list[bytes]] = [[data], [data[i : i + 1] for i in range(len(data))]]
    feeds += [[data[:i], data[i:]] for i in range(1, len(data))]
    for pieces in feeds:
        if "error" in case:
            name, words = case["error"]
            with pytest.raises(getattr(http_client, name), match=words):
                _parse(iter(pieces), eof)
            continue
        parser, body = _parse(iter(pieces), eof)
        assert parser.head is not None and parser.complete, pieces
        assert parser.head.status == case["status"]
        assert body == _bytes(case["body"]), pieces
        assert parser.reusable is case["reusable"], pieces
        if "header" in case:
            name, value = case["header"]
            assert parser.head.headers[name] == value


def test_response_head_size_is_limited() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="headers exceed"):
        parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * http_client.MAX_HEAD_BYTES)


def test_a_body_is_handed_on_as_it_arrives() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel") == b"hel"
    assert parser.head is not None and not parser.complete
    assert parser.feed(b"lo\r\n") == b"lo"
    assert parser.feed(b"0\r\n\r\n") == b"" and parser.complete


# ------------------------------------------------------------------ the pool, over sockets

LOOPS = ["asyncio"]
try:
    import uvloop

    LOOPS.append("uvloop")
except ImportError:  # pragma: no cover - the test extra installs it
    pass


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine to its end on a new loop of the parametrized kind."""

    def factory() -> asyncio.AbstractEventLoop:
        if request.param == "uvloop":
            return uvloop.new_event_loop()
        return asyncio.new_event_loop()

    def run_it(coroutine: Awaitable[Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(20):
                return await coroutine

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(bounded())

    return run_it


Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server whose handler reads the request itself and writes any bytes it likes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


async def _answer_each(server: RawServer, reader: Any, writer: Any) -> None:
    while await server.read_request(reader) is not None:
        writer.write(_ok(b"fine"))


def _pool(url: str, **options: Any) -> ConnectionPool:
    return ConnectionPool(url, **{"limit": 10, "connect_timeout": 5.0, **options})


def test_request_is_well_formed_and_connection_is_reused(run: Any) -> None:
    async def main() -> None:
        async with RawServer(_answer_each) as server:
            pool = _pool(server.url, user_agent="tokenstream/test")
            for _ in range(3):
                response = await pool.request(
                    "POST", "/chat/completions", {"Content-Type": "application/json"}, b"{}"
                )
                assert (response.status, await response.read()) == (200, b"fine")
                response.release()
            assert server.connections == 1
            assert pool.open_connections == 1
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
            assert b"Host: 127.0.0.1:" + server.url.split(":")[2].split("/")[0].encode() in lines
            assert b"User-Agent: tokenstream/test" in lines
            assert b"Content-Length: 2" in lines and body == b"{}"
            await pool.close()
            assert pool.open_connections == 0

    run(main())


def test_a_connection_the_server_closed_while_idle_is_not_used(run: Any) -> None:
    """The server closes after each answer (as a keep-alive timeout would): the request after
    goes out on a new connection, whether or not the close was seen before it was sent."""

    async def answer_once(server: RawServer, reader: Any, writer: Any) -> None:
        if server.connections == 1:
            await server.read_request(reader)
            writer.write(_ok(b"first"))
            await writer.drain()
            await server.read_request(reader)  # the second request: dropped unanswered
            return
        await _answer_each(server, reader, writer)

    async def main() -> None:
        async with RawServer(answer_once) as server:
            pool = _pool(server.url)
            response = await pool.request("GET", "/models", {}, None)
            assert await response.read() == b"first"
            response.release()
            response = await pool.request("GET", "/models", {}, None)
            assert await response.read() == b"fine"
            response.release()
            assert server.connections == 2
            await pool.close()

    run(main())


def test_a_new_connection_closed_unanswered_is_an_error(run: Any) -> None:
    async def hang_up(server: RawServer, reader: Any, writer: Any) -> None:
        await server.read_request(reader)

    async def main() -> None:
        async with RawServer(hang_up) as server:
            pool = _pool(server.url)
            with pytest.raises(ServerDisconnected, match="before its headers ended"):
                await pool.request("GET", "/models", {}, None)
            assert server.connections == 1  # not sent twice
            await pool.close()

    run(main())


def test_pool_limit_waits_at_most_the_connect_timeout(run: Any) -> None:
    async def main() -> None:
        async with RawServer(_answer_each) as server:
            pool = _pool(server.url, limit=1, connect_timeout=0.05)
            first = await pool.request("GET", "/models", {}, None)
            with pytest.raises(ConnectTimeout, match="no free connection"):
                await pool.request("GET", "/models", {}, None)
            await first.read()
            first.release()
            second = await pool.request("GET", "/models", {}, None)  # the slot is free again
            assert await second.read() == b"fine"
            second.release()
            await pool.close()

    run(main())


def test_closing_a_response_closes_its_connection_at_once(run: Any) -> None:
    async def stream_forever(server: RawServer, reader: Any, writer: Any) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        assert await reader.read() == b""  # until the client closes

    async def main() -> None:
        async with RawServer(stream_forever) as server:
            pool = _pool(server.url)
            response = await pool.request("POST", "/chat/completions", {}, b"{}")
            assert await response.readany() == b"one"
            response.close()
            await asyncio.wait_for(server.closed.wait(), 5)
            await pool.close()

    run(main())


def test_a_response_released_before_its_end_is_reused_once_it_ends(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's ``[DONE]`` often comes a write before the body's last chunk."""

    async def main(end: bool) -> int:
        release = asyncio.Event()

        async def two_writes(server: RawServer, reader: Any, writer: Any) -> None:
            while await server.read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nend\r\n")
                await release.wait()
                if end:
                    writer.write(b"0\r\n\r\n")
                release.clear()

        async with RawServer(two_writes) as server:
            pool = _pool(server.url)
            for _ in range(2):
                response = await pool.request("POST", "/chat/completions", {}, b"{}")
                assert await response.readany() == b"end"
                response.release()
                release.set()
                if end:  # back among the idle connections once the end arrived
                    await wait_for(lambda: bool(pool._idle))
                else:  # closed when the end did not come in time
                    await wait_for(lambda: pool.open_connections == 0)
            await pool.close()
            return server.connections

    monkeypatch.setattr(http_client, "_DRAIN_S", 0.05)
    assert run(main(end=True)) == 1
    assert run(main(end=False)) == 2  # the end never came: closed, not reused


def test_unreachable_origin(run: Any) -> None:
    async def main() -> None:
        async with RawServer(_answer_each) as server:
            url = server.url
        pool = _pool(url)  # the port is closed now
        with pytest.raises(ConnectError, match="cannot connect") as caught:
            await pool.request("GET", "/models", {}, None)
        assert isinstance(caught.value.os_error, OSError)
        await pool.close()

    run(main())


def test_a_reader_that_stops_reading_stops_the_socket_being_read(run: Any) -> None:
    """Flow control: the body is not buffered without bound while nobody reads it."""
    total = 8 * 1024 * 1024
    writers: list[asyncio.StreamWriter] = []

    async def flood(server: RawServer, reader: Any, writer: Any) -> None:
        await server.read_request(reader)
        writers.append(writer)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()

    def server_held_back() -> bool:  # its socket is full: its writes queue (over 64 KiB)
        return bool(writers) and writers[0].transport.get_write_buffer_size() > 65536

    async def main() -> None:
        async with RawServer(flood) as server:
            pool = _pool(server.url)
            response = await pool.request("GET", "/big", {}, None)
            await wait_for(server_held_back)
            for _ in range(100):  # loop turns in which, unpaused, the socket would be read
                await asyncio.sleep(0)
            buffered = len(response.read_nowait())
            assert buffered <= 2 * http_client._READ_HIGH_WATER  # ...and little is buffered
            assert buffered + len(await response.read()) == total  # nothing is lost
            response.release()
            await pool.close()

    run(main())


def test_a_compressed_body_is_decoded(run: Any) -> None:
    body = b"data: compressed anyway\n\n" * 100

    async def gzipped(server: RawServer, reader: Any, writer: Any) -> None:
        await server.read_request(reader)
        packed = gzip.compress(body)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b"
            % (len(packed), packed)
        )

    async def main() -> None:
        async with RawServer(gzipped) as server:
            pool = _pool(server.url)
            response = await pool.request("GET", "/models", {}, None)
            assert await response.read() == body
            response.release()
            await pool.close()
            assert b"Accept-Encoding: identity" in server.requests[0]

    run(main())


def test_an_unknown_content_encoding_is_an_error(run: Any) -> None:
    async def brotli(server: RawServer, reader: Any, writer: Any) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx")

    async def main() -> None:
        async with RawServer(brotli) as server:
            pool = _pool(server.url, limit=1)
            with pytest.raises(ProtocolError, match="Content-Encoding 'br'"):
                await pool.request("GET", "/models", {}, None)
            with pytest.raises(ProtocolError):  # the slot was given back
                await pool.request("GET", "/models", {}, None)
            await pool.close()

    run(main())


def test_a_header_with_a_line_break_is_refused(run: Any) -> None:
    async def main() -> None:
        pool = _pool("http://127.0.0.1:9/v1")
        with pytest.raises(ValueError, match="line break"):
            await pool.request("GET", "/models", {"Authorization": "Bearer x\r\nX-Evil: 1"}, None)
        await pool.close()

    run(main())


def test_https(run: Any) -> None:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _answer_each(RawServer(_answer_each), r, w), "127.0.0.1", 0,
            ssl=server_context,
        )
        port = server.sockets[0].getsockname()[1]
        pool = _pool(f"https://localhost:{port}/v1", ssl_context=client_context)
        response = await pool.request("GET", "/models", {}, None)
        assert await response.read() == b"fine"
        response.release()
        await pool.close()
        untrusted = _pool(f"https://localhost:{port}/v1")  # the system's CAs only
        with pytest.raises(HTTPClientError):
            await untrusted.request("GET", "/models", {}, None)
        await untrusted.close()
        server.close()

    run(main())


@pytest.mark.parametrize(
    ("base_url", "host", "port", "host_header", "base_path"),
    [
        ("https://api.openai.com/v1", "api.openai.com", 443, "api.openai.com", "/v1"),
        ("http://localhost:8000/v1/", "localhost", 8000, "localhost:8000", "/v1"),
        ("http://127.0.0.1/", "127.0.0.1", 80, "127.0.0.1", ""),
        ("http://[::1]:8080/openai/v1", "::1", 8080, "[::1]:8080", "/openai/v1"),
        ("https://example.com:443/v1", "example.com", 443, "example.com", "/v1"),
    ],
)
def test_the_origin_and_the_host_header(
    base_url: str, host: str, port: int, host_header: str, base_path: str
) -> None:
    pool = _pool(base_url)
    assert (pool.host, pool.port, pool._host_header, pool.base_path) == (
        host, port, host_header, base_path
    )


@pytest.mark.parametrize("base_url", ["ftp://example.com/v1", "http:///v1", "example.com"])
def test_a_base_url_that_is_not_http_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        _pool(base_url)
