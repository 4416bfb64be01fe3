from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tokenstream.cli import _loop_factory, main
from tokenstream.client import stream_prompt
from tokenstream.engine.clock import FakeClock
from tokenstream.errors import TokenstreamError
from tokenstream.server.app import create_app

from support import parse_sse, scripted_reply

CHINESE = scripted_reply("chinese")


async def test_terminal_client_prints_text_and_measures() -> None:
    server = TestServer(create_app(clock=FakeClock()))
    await server.start_server()
    try:
        written: list[str] = []
        summary = await stream_prompt(
            str(server.make_url("/")), "chinese", {"profile": "fast"}, written.append
        )
    finally:
        await server.close()
    assert "".join(written) == CHINESE
    assert summary.error is None
    assert summary.events == len(written)
    assert summary.tokens >= summary.events
    assert "tokens" in summary.describe()


async def test_terminal_client_reports_server_errors() -> None:
    server = TestServer(create_app(clock=FakeClock()))
    await server.start_server()
    try:
        summary = await stream_prompt(
            str(server.make_url("/")), "x", {"profile": "warp"}, lambda _: None
        )
    finally:
        await server.close()
    assert summary.error is not None and "warp" in summary.error


def test_bad_config_stops_start_up_with_file_key_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("profiles:\n  x:\n    ttft_ms: -1\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "profiles.x.ttft_ms" in err
    assert "greater than or equal to 0" in err


def test_unknown_profile_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--profile", "warp"]) == 2
    assert "chatgpt" in capsys.readouterr().err


def test_loop_auto_is_uvloop_when_installed_else_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvloop  # in the test extra

    assert _loop_factory("auto") == ("uvloop", uvloop.new_event_loop)
    assert _loop_factory("asyncio") == ("asyncio", asyncio.new_event_loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert _loop_factory("auto") == ("asyncio", asyncio.new_event_loop)
    with pytest.raises(TokenstreamError, match=r"pip install 'tokenstream\[uvloop\]'"):
        _loop_factory("uvloop")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[str]:
    """``python -m tokenstream serve`` as a real subprocess on a free port."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenstream", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    banner = process.stdout.readline().decode()  # blocks until the server is listening
    assert f"127.0.0.1:{port}" in banner, banner
    assert "; uvloop)" in banner, banner  # --loop auto, with uvloop installed
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.stdout.close()
        assert process.wait(timeout=30) == 0


@pytest.mark.slow
def test_served_process_streams_to_a_plain_http_client(served: str) -> None:
    url = f"{served}/v1/stream?prompt=chinese&profile=instant"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        events = parse_sse(response.read())
    assert "".join(e.data for e in events[:-1]) == CHINESE
    assert events[-1].data == "[DONE]"


@pytest.mark.slow
def test_stream_command_against_served_process(served: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenstream", "stream", "chinese", "--url", served,
         "--profile", "instant"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHINESE + "\n"
    assert "tokens/s" in result.stderr or "tokens in" in result.stderr
