from __future__ import annotations

from pathlib import Path

import pytest

from tokenstream.config import Config, load_config
from tokenstream.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_reference_file_equals_embedded_defaults() -> None:
    from_file = load_config(REPO / "config" / "default.yaml")
    assert from_file.model_dump(exclude={"base_dir"}) == Config().model_dump(exclude={"base_dir"})


def test_reference_file_spells_out_every_default_key() -> None:
    """The reference documents every key: loading it onto empty defaults changes nothing."""
    import yaml

    data = yaml.safe_load((REPO / "config" / "default.yaml").read_text("utf-8"))
    dumped = Config().model_dump(mode="json", exclude={"base_dir"})
    assert set(data) == set(dumped)
    for section in ("server", "tokenizer", "responses", "upstream", "control"):
        assert set(data[section]) == set(dumped[section])
    for name, profile in dumped["profiles"].items():
        assert set(data["profiles"][name]) == set(profile)


def test_no_file_means_embedded_defaults() -> None:
    config = load_config(None)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert {"chatgpt", "fast", "slow", "instant"} <= set(config.profiles)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokenstream.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_merges_onto_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "server:\n  port: 9000\nprofiles:\n  mine:\n    tokens_per_second: 5\n"
        "default_profile: mine\n",
    )
    config = load_config(path)
    assert config.server.port == 9000
    assert config.server.host == "127.0.0.1"
    assert config.profiles["mine"].tokens_per_second == 5
    assert "chatgpt" in config.profiles
    assert config.default_profile == "mine"


def test_reply_file_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "replies").mkdir()
    (tmp_path / "replies" / "hi.md").write_text("from a file 你好\n", encoding="utf-8")
    path = _write(
        tmp_path, "responses:\n  rules:\n    - match: hi\n      reply_file: replies/hi.md\n"
    )
    (rule,) = load_config(path).reply_rules()
    assert rule.reply == "from a file 你好\n"


@pytest.mark.parametrize(
    "text,key,reason",
    [
        ("server:\n  prot: 9000\n", "server.prot", "unknown key"),
        ("server:\n  port: 70000\n", "server.port", "less than or equal to 65535"),
        ("server:\n  port: eighty\n", "server.port", "valid integer"),
        ("profiles:\n  x:\n    tokens_per_second: -3\n", "profiles.x.tokens_per_second",
         "greater than 0"),
        ("profiles:\n  x:\n    jitter: .nan\n", "profiles.x.jitter", "finite"),
        ("default_profile: nope\n", "(top level)", "'nope' is not among the profiles"),
        ("responses:\n  rules:\n    - match: '(unclosed'\n      reply: x\n",
         "responses.rules.0.match", "not a valid regular expression"),
        ("responses:\n  rules:\n    - match: x\n", "responses.rules.0",
         "give 'reply', 'reply_file', 'tool_calls' or 'fault'"),
        ("responses:\n  rules:\n    - tool_calls: [{name: f, arguments: '[1]'}]\n",
         "responses.rules.0.tool_calls.0.arguments", "must be a JSON object"),
        ("responses:\n  rules:\n    - tool_calls: [{name: 'two words'}]\n",
         "responses.rules.0.tool_calls.0.name", "should match pattern"),
        ("responses:\n  rules:\n    - tool_result: '('\n      reply: x\n",
         "responses.rules.0.tool_result", "not a valid regular expression"),
        ("responses:\n  source: oracle\n", "responses.source", "'scripted' or 'echo'"),
        # the conditions of a rule, its fault and its profile
        ("responses:\n  rules:\n    - {fault: 'boom@3', reply: x}\n",
         "responses.rules.0.fault", "unknown kind 'boom'"),
        ("responses:\n  rules:\n    - {fault: 'error:429@0,error:500@0'}\n",
         "responses.rules.0.fault", "only one error can answer the request"),
        ("responses:\n  rules:\n    - {profile: turbo, reply: x}\n",
         "responses.rules.0.profile", "'turbo' is not among the profiles"),
        ("responses:\n  rules:\n    - {call: 0, reply: x}\n",
         "responses.rules.0.call", "give a call number from 1"),
        ("responses:\n  rules:\n    - {call: [], reply: x}\n",
         "responses.rules.0.call", "a list of them"),
        ("responses:\n  rules:\n    - {call: {from: 3, to: 1}, reply: x}\n",
         "responses.rules.0.call", "'to' (1) comes before 'from' (3)"),
        ("responses:\n  rules:\n    - {call: {start: 3}, reply: x}\n",
         "responses.rules.0.call", "call: {from: 3}"),
        ("responses:\n  rules:\n    - {dialect: grpc, reply: x}\n",
         "responses.rules.0.dialect.0", "'openai-chat', 'openai-responses', 'anthropic'"),
        ("responses:\n  rules:\n    - {dialect: [], reply: x}\n",
         "responses.rules.0.dialect", "give at least one dialect"),
        ("responses:\n  rules:\n    - {headers: {'bad name': x}, reply: x}\n",
         "responses.rules.0.headers", "'bad name' is not a header name"),
        ("responses:\n  rules:\n    - {headers: {X-Env: '('}, reply: x}\n",
         "responses.rules.0.headers", "X-Env: not a valid regular expression"),
        ("responses:\n  rules:\n    - {model: '[', reply: x}\n",
         "responses.rules.0.model", "not a valid regular expression"),
        ("responses:\n  rules:\n    - {system: '(', reply: x}\n",
         "responses.rules.0.system", "not a valid regular expression"),
        ("responses:\n  rules:\n    - {tool_call_id: '(', reply: x}\n",
         "responses.rules.0.tool_call_id", "not a valid regular expression"),
        ("responses:\n  rules:\n    - {tools: maybe, reply: x}\n",
         "responses.rules.0.tools", "valid boolean"),
        ("responses:\n  rules:\n    - {matches: x, reply: x}\n",
         "responses.rules.0.matches", "unknown key"),
        ("responses:\n  strict: sometimes\n", "responses.strict", "valid boolean"),
        ("responses:\n  max_sequences: 0\n", "responses.max_sequences", "greater than or equal"),
        ("control:\n  max_journal_entries: -1\n", "control.max_journal_entries",
         "greater than or equal to 0"),
        ("control:\n  journal: true\n", "control.journal", "unknown key"),
        ("server: [1, 2]\n", "server", "valid dictionary"),
        ("- just\n- a list\n", "(top level)", "mapping"),
        ("server:\n  port: 1\n bad indent\n", "line 3", "not valid YAML"),
    ],
)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert reason in message


def test_missing_reply_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "responses:\n  rules:\n    - match: x\n      reply_file: gone.md\n")
    with pytest.raises(ConfigError, match=r"gone\.md"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")).server.port == 8080
