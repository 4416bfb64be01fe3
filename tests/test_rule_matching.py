"""Scripted rules: every condition, their combinations and ``call`` sequences, as data
(``tests/vectors/rule_matching.json``); strict mode's closest rule; run-time rules and the
sequence counts, and their bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from tokenstream.config import ReplyRule, RuleConfig, compile_rule
from tokenstream.engine.events import TextDelta, ToolCall
from tokenstream.engine.faults import Fault
from tokenstream.engine.messages import ChatMessage
from tokenstream.errors import NotFound
from tokenstream.sources.matching import Facts, ScriptRequest, conditions_of, failed_conditions
from tokenstream.sources.scripted import ScriptedSource
from tokenstream.sources.sequences import Sequences

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "rule_matching.json").read_text(encoding="utf-8")
)


def _rule(fields: dict[str, Any], index: int = 0) -> ReplyRule:
    if not {"reply", "tool_calls", "fault"} & set(fields):
        fields = {**fields, "reply": f"reply of rule {index}"}
    config = RuleConfig.model_validate(fields)
    return compile_rule(config, config.reply or "", index=index)


def _request(spec: dict[str, Any]) -> ScriptRequest:
    messages = [ChatMessage("system", spec["system"])] if "system" in spec else []
    if "messages" in spec:
        messages += [ChatMessage(m["role"], m["content"]) for m in spec["messages"]]
    else:
        messages.append(ChatMessage("user", spec["prompt"]))
    if "tool_result" in spec:
        result = spec["tool_result"]
        call = ToolCall(result["call_id"], "tool", "{}")
        messages += [
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", result["content"], tool_call_id=result["call_id"]),
        ]
    return ScriptRequest(
        messages,
        spec.get("model", "tokenstream-1"),
        spec.get("dialect", "openai-chat"),
        tuple(spec.get("tools", ())),
        CIMultiDict(spec.get("headers", {})),
    )


@pytest.mark.parametrize("case", VECTORS["single"], ids=[c["name"] for c in VECTORS["single"]])
def test_each_condition(case: dict[str, Any]) -> None:
    rule = _rule(case["rule"])
    request = _request(case["request"])
    failures = failed_conditions(rule, Facts.of(request, call=1), all_of_them=True)
    assert [failure.split(":")[0] for failure in failures] == case["failed"], failures
    chosen = ScriptedSource([rule], "default").answer(request).rule
    assert chosen is (rule if not case["failed"] else None)


def test_a_rule_runs_only_the_conditions_it_sets() -> None:
    """A request runs a rule's own checks (worked out once per rule), and a rule that sets
    every condition keeps every check, in order."""
    plain = [c.__name__ for c in conditions_of(_rule({"match": "a"}))]
    assert plain == ["_tool_result_failure", "_match_failure"]
    every = _rule({
        "match": "a", "tool_result": "r", "system": "s", "model": "m", "dialect": ["anthropic"],
        "tools": True, "tool": "t", "headers": {"X-A": "b"}, "call": 2,
    })
    assert [c.__name__ for c in conditions_of(every)] == [
        "_tool_result_failure", "_dialect_failure", "_model_failure", "_tools_failure",
        "_tool_failure", "_header_failure", "_call_failure", "_system_failure", "_match_failure",
    ]


@pytest.mark.parametrize(
    "case", VECTORS["sequences"], ids=[c["name"] for c in VECTORS["sequences"]]
)
def test_sequences(case: dict[str, Any]) -> None:
    rules = [_rule(fields, index) for index, fields in enumerate(case["rules"])]
    source = ScriptedSource(rules, "default")
    chosen = [source.answer(_request(spec)).rule for spec in case["requests"]]
    expected = [None if s["expect"] is None else rules[s["expect"]] for s in case["requests"]]
    assert [r and r.index for r in chosen] == [r and r.index for r in expected]


def test_the_answer_carries_the_rule_its_call_and_its_events() -> None:
    fault_only = _rule({"call": 1, "fault": "error:429@0", "profile": "fast"}, 0)
    scripted = _rule({"reply": "ok"}, 1)
    source = ScriptedSource([fault_only, scripted], "the default")
    first = source.answer(_request({"prompt": "hi"}))
    assert first.rule is fault_only and first.call == 1
    assert first.rule.fault == (Fault("error", status=429),)
    assert first.rule.fault_spec == "error:429@0" and first.rule.profile == "fast"
    assert first.events == (TextDelta("the default"),)  # a rule with only a fault
    second = source.answer(_request({"prompt": "hi"}))
    assert (second.rule, second.call, second.events) == (scripted, 2, (TextDelta("ok"),))


def test_strict_mode_names_the_closest_rule_and_what_it_failed() -> None:
    rules = [
        _rule({"match": "weather", "model": "o1-.*", "dialect": "anthropic"}, 0),
        _rule({"match": "weather", "model": "claude-.*"}, 1),
        _rule({"tool_result": "x"}, 2),
    ]
    source = ScriptedSource(rules, "default", strict=True)
    with pytest.raises(NotFound) as caught:
        source.answer(_request({"prompt": "the weather", "model": "gpt-4o"}))
    error = caught.value
    assert error.status == 404 and error.code == "no_matching_rule"
    assert "responses.strict" in error.message
    assert "closest rule is responses.rules.1, which failed 1 condition: model: " in error.message
    assert "'gpt-4o' does not fully match 'claude-.*'" in error.message
    assert "dialect" not in error.message  # rule 0 failed two


def test_strict_mode_reports_every_failed_condition_of_the_closest() -> None:
    source = ScriptedSource([_rule({"match": "a", "system": "b"})], "default", strict=True)
    with pytest.raises(NotFound, match=r"2 conditions: system: .*; match: .*'a'"):
        source.answer(_request({"prompt": "z"}))
    with pytest.raises(NotFound, match="there are no rules"):
        ScriptedSource([], "default", strict=True).answer(_request({"prompt": "z"}))


def test_strict_mode_answers_a_match_as_usual() -> None:
    rule = _rule({"match": "a"})
    assert ScriptedSource([rule], "d", strict=True).answer(_request({"prompt": "a"})).rule is rule


def _added(source: ScriptedSource, fields: list[dict[str, Any]], test_id: str | None) -> None:
    source.runtime.add([RuleConfig.model_validate(f) for f in fields], test_id)


def test_runtime_rules_come_first_newest_first_and_only_for_their_test() -> None:
    config_rule = _rule({"match": "hi", "reply": "config"})
    source = ScriptedSource([config_rule], "default")
    _added(source, [{"match": "hi", "reply": "everyone"}], None)
    _added(source, [{"match": "hi", "reply": "t1, first"}, {"reply": "t1, second"}], "t1")
    _added(source, [{"match": "hi", "reply": "t2"}], "t2")

    def reply(test_id: str | None, prompt: str = "hi") -> str:
        headers = {"X-Tokenstream-Test-Id": test_id} if test_id else {}
        events = source.answer(_request({"prompt": prompt, "headers": headers})).events
        return "".join(e.text for e in events if isinstance(e, TextDelta))

    assert reply("t1") == "t1, first"  # the test's rules, in the order they were given
    assert reply("t1", "other") == "t1, second"
    assert reply("t2") == "t2"
    assert reply(None) == "everyone"
    assert reply("t3") == "everyone"
    chosen = source.answer(_request({"prompt": "hi", "headers": {"X-Tokenstream-Test-Id": "t1"}}))
    assert chosen.rule is not None and chosen.rule.origin == "runtime"
    assert (chosen.rule.index, chosen.rule.name, chosen.rule.test_id) == (2, "runtime rule 2", "t1")

    assert source.runtime.clear("t1") == 2
    assert reply("t1") == "everyone" and reply("t2") == "t2"
    assert source.runtime.clear(None) == 2
    assert reply("t2") == "config"


def test_runtime_rules_are_bounded_the_oldest_dropped() -> None:
    source = ScriptedSource([], "default", max_runtime_rules=3)
    for number in range(5):
        _added(source, [{"match": f"r{number}", "reply": str(number)}], None)
    assert len(source.runtime) == 3
    kept = [rule.reply for rule in source.runtime.for_test(None)]
    assert kept == ["4", "3", "2"]
    with pytest.raises(ValueError, match="at most 3"):
        _added(source, [{"reply": "x"}] * 4, None)


def test_sequences_are_bounded_the_least_recently_used_forgotten() -> None:
    sequences = Sequences(max_sequences=2)
    a, b, c = ("", "session", "a"), ("", "session", "b"), ("t", "session", "c")
    assert [sequences.next_call(a), sequences.next_call(b), sequences.next_call(a)] == [1, 1, 2]
    assert sequences.next_call(c) == 1  # b, the least recently used, is forgotten
    assert len(sequences) == 2
    assert sequences.next_call(b) == 1
    assert sequences.next_call(a) == 1  # a went when b came back
    assert sequences.forget("t") == 0 and sequences.forget(None) == 2


def test_the_conversation_key_ignores_later_turns_and_the_dialect() -> None:
    first = _request({"prompt": "hi", "system": "s"})
    later = _request({"system": "s", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "more"}]})
    other_dialect = _request({"prompt": "hi", "system": "s", "dialect": "anthropic"})
    assert first.sequence_key() == later.sequence_key() == other_dialect.sequence_key()
    # the parts are delimited: moving text between system and message is another key
    assert _request({"prompt": "ab", "system": "x"}).sequence_key() != _request(
        {"prompt": "b", "system": "xa"}).sequence_key()
