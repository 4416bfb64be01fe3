"""The upstream section of the config, the key's environment variable, and serve --upstream."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tokenstream import cli
from tokenstream.config import Config, UpstreamConfig, load_config
from tokenstream.errors import ConfigError
from tokenstream.sources.upstream import UpstreamClient


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "tokenstream.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_defaults_have_no_upstream_and_ship_the_smooth_profile() -> None:
    config = Config()
    assert config.upstream.base_url is None
    assert config.upstream.api_key_env == "OPENAI_API_KEY"
    assert config.upstream.forward_client_auth is False
    assert config.default_source == "scripted"
    smooth = config.profiles["smooth"]
    assert smooth.max_buffer_ms == 750
    assert smooth.ttft_ms == 0
    assert config.upstream.profile == "smooth"


def test_upstream_from_a_file(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "upstream:\n  base_url: http://127.0.0.1:11434/v1/\n  model: llama3.2\n"
        "  idle_timeout_s: 30\n  max_connections: 8\n",
    )
    assert config.upstream.base_url == "http://127.0.0.1:11434/v1"  # trailing slash dropped
    assert config.upstream.model == "llama3.2"
    assert config.default_source == "upstream"
    assert config.upstream.connect_timeout_s == 10.0  # the rest keeps its defaults


@pytest.mark.parametrize(
    "yaml_text,key,reason",
    [
        ("upstream:\n  base_url: ftp://host/v1\n", "upstream.base_url", "http:// or https://"),
        ("upstream:\n  base_url: /v1\n", "upstream.base_url", "http:// or https://"),
        ("upstream:\n  base_url: https://user:sk-x@host/v1\n", "upstream.base_url",
         "upstream.api_key_env"),
        ("upstream:\n  base_url: https://host/v1?key=1\n", "upstream.base_url", "query"),
        ("upstream:\n  api_key_env: 'MY KEY'\n", "upstream.api_key_env", "pattern"),
        ("upstream:\n  idle_timeout_s: 0\n", "upstream.idle_timeout_s", "greater than 0"),
        ("upstream:\n  first_byte_timeout_s: .inf\n", "upstream.first_byte_timeout_s", ""),
        ("upstream:\n  max_connections: 0\n", "upstream.max_connections", ""),
        ("upstream:\n  api_key: sk-123\n", "upstream.api_key", "unknown key"),
        ("upstream:\n  base_url: http://h/v1\n  profile: nope\n", "(top level)",
         "upstream.profile 'nope'"),
        ("profiles:\n  mine:\n    max_buffer_ms: -1\n", "profiles.mine.max_buffer_ms", ""),
        ("upstream:\n  max_body_bytes: 10\n", "upstream.max_body_bytes", "1024"),
        ("upstream:\n  verify_tls: maybe\n", "upstream.verify_tls", "boolean"),
        ("upstream:\n  ca_file: missing-ca.pem\n", "upstream.ca_file",
         "missing-ca.pem cannot be read: No such file or directory"),
        ("upstream:\n  ca_file: .\n", "upstream.ca_file", "cannot be read: Is a directory"),
        ("upstream:\n  ca_file: tokenstream.yaml\n", "upstream.ca_file",
         "holds no CA certificate that can be loaded"),
        ("upstream:\n  ca_file: /ca.pem\n  verify_tls: false\n", "upstream",
         "remove one of them"),
    ],
)
def test_bad_upstream_config_names_file_key_and_reason(
    tmp_path: Path, yaml_text: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, yaml_text)
    message = str(caught.value)
    assert "tokenstream.yaml" in message
    assert key in message
    assert reason in message
    assert "sk-x" not in message  # a credential in a bad URL is not repeated


def test_new_tls_and_size_settings_default_to_safe_values() -> None:
    upstream = Config().upstream
    assert upstream.verify_tls is True
    assert upstream.ca_file is None
    assert upstream.max_body_bytes == 16 * 1024 * 1024


def test_ca_file_is_found_relative_to_the_config_file(tmp_path: Path) -> None:
    import trustme

    (tmp_path / "certs").mkdir()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "certs" / "ca.pem"))
    config = _load(tmp_path, "upstream:\n  base_url: https://h/v1\n  ca_file: certs/ca.pem\n")
    assert config.upstream.ca_file == tmp_path / "certs" / "ca.pem"


async def test_a_ca_file_gone_by_start_up_stops_it_naming_the_key(tmp_path: Path) -> None:
    config = UpstreamConfig(base_url="https://h/v1", ca_file=tmp_path / "gone.pem")
    client = UpstreamClient(config, None)
    with pytest.raises(ConfigError) as caught:
        await client.start()
    assert "upstream.ca_file" in str(caught.value)
    assert "gone.pem cannot be read" in str(caught.value)
    await client.close()


def test_key_comes_from_the_named_variable_and_is_stripped() -> None:
    config = UpstreamConfig(base_url="http://h/v1", api_key_env="MY_UPSTREAM_KEY")
    client = UpstreamClient.from_environment(config, {"MY_UPSTREAM_KEY": " sk-abc\n"})
    assert client._api_key == "sk-abc"


def test_key_with_spaces_inside_stops_start_up_without_showing_it() -> None:
    config = UpstreamConfig(base_url="http://h/v1")
    with pytest.raises(ConfigError) as caught:
        UpstreamClient.from_environment(config, {"OPENAI_API_KEY": "sk-abc def"})
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "sk-abc" not in str(caught.value)


def test_missing_key_is_a_warning_naming_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    client = UpstreamClient.from_environment(UpstreamConfig(base_url="http://h/v1"), {})
    assert client._api_key is None
    assert "OPENAI_API_KEY is not set" in caplog.text


def test_serve_upstream_flag_sets_base_url_and_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(app: Any, **kwargs: Any) -> None:
        from tokenstream.server.app import CONFIG

        seen["config"] = app[CONFIG]
        seen["kwargs"] = kwargs

    monkeypatch.setattr("tokenstream.server.serve.serve", fake_serve)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code = cli.main(["serve", "--upstream", "http://127.0.0.1:8000/v1", "--profile", "steady"])
    assert code == 0
    config = seen["config"]
    assert config.upstream.base_url == "http://127.0.0.1:8000/v1"
    assert config.upstream.profile == "steady"
    assert config.default_source == "upstream"
    assert seen["kwargs"]["host"] == "127.0.0.1"


def test_serve_bad_upstream_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--upstream", "localhost:8000"]) == 2
    error = capsys.readouterr().err
    assert "--upstream" in error
    assert "upstream.base_url" in error
