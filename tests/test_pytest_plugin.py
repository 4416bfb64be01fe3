"""The pytest plugin as a project that tests its app would use it: installing tokenstream
registers it (the ``pytest11`` entry point), and a test asks for ``tokenstream_server``.

The tests here use the fixture as any project's tests would: nothing in this repository's
conftest provides it. (After a change to the entry points, ``pip install -e .`` again.)
"""

from __future__ import annotations

import http.client
import importlib.metadata
import subprocess
import sys
import textwrap

import openai
import pytest
from openai import OpenAI

from tokenstream.testing.server import ControlError, TokenstreamServer

pytest_plugins = ("pytester",)

KEY = "sk-plugin-test-0123456789"


def summarize(client: OpenAI, text: str) -> str:
    """The app under test: it knows nothing of tokenstream, only of the OpenAI SDK."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        messages=[{"role": "system", "content": "Summarize in one line."},
                  {"role": "user", "content": text}],
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def _client(server: TokenstreamServer, key: str = "test-key") -> OpenAI:
    return OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0)


def test_the_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    points = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert points.get("tokenstream") == "tokenstream.testing.pytest_plugin", (
        "the pytest11 entry point is not installed: run `pip install -e .`"
    )


def test_importing_the_plugin_loads_no_server() -> None:
    code = ("import sys, tokenstream.testing.pytest_plugin; "
            "print(sorted(m for m in ('aiohttp', 'tiktoken', 'openai') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.tokenstream(rules=[{"system": "(?i)summari[sz]e", "reply": "One line, in sum."}])
def test_an_app_using_the_openai_sdk(tokenstream_server: TokenstreamServer) -> None:
    assert summarize(_client(tokenstream_server), "A long text.") == "One line, in sum."
    (entry,) = tokenstream_server.journal()
    assert entry["body"]["model"] == "gpt-4o-mini" and entry["body"]["stream"] is True
    assert entry["rule"] == {"source": "config", "index": 0, "name": "responses.rules.0"}
    assert (entry["status"], entry["outcome"], entry["tokens"]) == (200, "completed", 6)
    assert entry["headers"]["Authorization"] == "[redacted]"


def test_without_a_marker_the_built_in_rules_answer(tokenstream_server: TokenstreamServer) -> None:
    assert tokenstream_server.base_url.startswith("http://127.0.0.1:")
    assert tokenstream_server.openai_base_url == tokenstream_server.base_url + "/v1"
    reply = _client(tokenstream_server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}])
    assert (reply.choices[0].message.content or "").startswith("Hello! I'm tokenstream.")


def test_rules_added_by_the_test_and_the_journal(tokenstream_server: TokenstreamServer) -> None:
    added = tokenstream_server.add_rules([
        {"call": 1, "reply": "First try."},
        {"call": {"from": 2}, "reply": "Second try."},
    ])
    assert [rule["name"] for rule in added] == ["runtime rule 1", "runtime rule 2"]
    client = _client(tokenstream_server)
    replies = [summarize(client, "same text") for _ in range(3)]
    assert replies == ["First try.", "Second try.", "Second try."]
    assert [e["call"] for e in tokenstream_server.journal()] == [1, 2, 3]
    assert [e["call"] for e in tokenstream_server.journal(limit=1)] == [3]
    assert tokenstream_server.clear_journal() == 3
    assert tokenstream_server.journal() == []
    assert tokenstream_server.clear_rules() == 2
    with pytest.raises(ControlError, match=r"rules\.0\.call") as caught:
        tokenstream_server.add_rules([{"call": 0, "reply": "x"}])
    assert caught.value.status == 400


@pytest.mark.tokenstream(
    config={"responses": {"strict": True}, "server": {"api_keys": [KEY]}},
    rules=[{"model": "gpt-4o", "reply": "ok"}],
)
def test_the_marker_s_config_strict_mode_and_keys(tokenstream_server: TokenstreamServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        summarize(_client(tokenstream_server), "text")
    with pytest.raises(openai.NotFoundError) as caught:
        summarize(_client(tokenstream_server, KEY), "text")
    assert caught.value.code == "no_matching_rule"
    assert "'gpt-4o-mini' does not fully match 'gpt-4o'" in caught.value.message
    statuses = [entry["status"] for entry in tokenstream_server.journal()]  # with the key
    assert statuses == [401, 404]


def test_a_bad_rule_fails_at_once_naming_the_key() -> None:
    from tokenstream.errors import ConfigError

    with pytest.raises(ConfigError, match=r"responses\.rules\.0\.tool_call_id"):
        TokenstreamServer(rules=[{"tool_call_id": "(", "reply": "x"}])


def test_stopping_ends_open_streams_and_closes_the_port() -> None:
    server = TokenstreamServer(config={"default_profile": "slow"}).start()
    port = server.port
    assert port is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/stream?prompt=long&format=json")
    response = connection.getresponse()
    assert response.status == 200
    server.stop()  # the stream, 1.5 s to its first token and a minute long, is ended
    rest = response.read()
    assert b"server_shutting_down" in rest
    connection.close()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=5).connect()
    server.stop()  # a second stop does nothing


@pytest.mark.slow
def test_a_project_s_test_run_by_pytest(pytester: pytest.Pytester) -> None:
    """A project of its own, in a new pytest process: the README's example."""
    pytester.makepyfile(test_app=textwrap.dedent('''
        import pytest
        from openai import OpenAI

        def summarize(client, text):
            stream = client.chat.completions.create(
                model="gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": f"Summarize: {text}"}],
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        @pytest.mark.tokenstream(rules=[{"match": "^Summarize", "reply": "Short."}])
        def test_summarize(tokenstream_server):
            client = OpenAI(base_url=tokenstream_server.openai_base_url, api_key="test")
            assert summarize(client, "a long text") == "Short."
            (entry,) = tokenstream_server.journal()
            assert entry["body"]["model"] == "gpt-4o-mini"
    '''))
    # every warning an error; the asyncio plugins of this venv are not the project's
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-W", "error", "-p", "no:cacheprovider",
        "-p", "no:aiohttp", "-p", "no:asyncio",
    )
    result.assert_outcomes(passed=1)
