"""The control API under ``/_tokenstream/``, for tests: the request journal and rules added
at run time. Behind the API keys when keys are set, as every path but the open ones.

    GET    /_tokenstream/journal    {"entries": [...]}, oldest first; ?test_id=, ?limit=N
    DELETE /_tokenstream/journal    {"deleted": N}
    POST   /_tokenstream/rules      a JSON list of rules in the config's format: validated
                                    as the config's are and tried before them, the newest
                                    first -> {"added": [{"index": 7, "name": ...}, ...]}
    DELETE /_tokenstream/rules      {"deleted": N}; the test's sequences start again

Each is scoped by the ``X-Tokenstream-Test-Id`` header (or ``?test_id=``): rules added with
a test id match only requests that carry the same header, and the journal, the rules and the
sequences of one test are listed and deleted without touching another's. Without a test id,
a request sees and deletes everything, and its rules match every request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from tokenstream.config import RuleConfig
from tokenstream.errors import InvalidRequest, RequestError
from tokenstream.server.journal import CONTROL_PREFIX
from tokenstream.server.state import STATE
from tokenstream.sources.matching import TEST_ID_HEADER

__all__ = ["add_control_routes"]

_RULES = TypeAdapter(list[RuleConfig])


def _test_id(request: web.Request) -> str | None:
    return request.query.get("test_id") or request.headers.get(TEST_ID_HEADER) or None


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 9:
        raise InvalidRequest(
            f"Invalid value for 'limit': {text!r} is not a whole number from 0.",
            param="limit", code="invalid_value",
        )
    return int(text)


async def journal(request: web.Request) -> web.Response:
    entries = await request.app[STATE].journal.read(_test_id(request), _limit(request))
    return web.json_response({"entries": entries})


async def clear_journal(request: web.Request) -> web.Response:
    return web.json_response(
        {"deleted": await request.app[STATE].journal.delete(_test_id(request))}
    )


def _invalid_rules(error: ValidationError) -> InvalidRequest:
    item = error.errors(include_url=False)[0]
    key = ".".join(["rules", *(str(part) for part in item["loc"])])
    reason = item["msg"]
    if item["type"] == "extra_forbidden":
        reason = "unknown key (check its spelling and where it is nested)"
    elif item["type"] == "json_invalid":
        return InvalidRequest(f"The request body is not valid JSON: {reason}",
                              code="invalid_json")
    elif not item["loc"]:
        reason = "the body is a JSON list of rules, in the format of the config's rules"
    return InvalidRequest(f"Invalid rule: {key}: {reason}", param=key, code="invalid_rule")


def _parsed_rules(body: bytes, request: web.Request) -> list[RuleConfig]:
    try:
        rules = _RULES.validate_json(body)
    except ValidationError as exc:
        raise _invalid_rules(exc) from None
    config = request.app[STATE].config
    for number, rule in enumerate(rules):
        if rule.reply_file is not None:
            raise InvalidRequest(
                f"Invalid rule: rules.{number}.reply_file: a rule added at run time gives its "
                "reply as 'reply' (the server's files are not for clients to read).",
                param=f"rules.{number}.reply_file", code="invalid_rule",
            )
        problem = config.unknown_profile(rule.profile)
        if problem:
            raise InvalidRequest(f"Invalid rule: rules.{number}.profile: {problem}.",
                                 param=f"rules.{number}.profile", code="invalid_rule")
    return rules


async def _body(request: web.Request) -> bytes:
    timeout_s = request.app[STATE].config.server.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestError(
            f"The request body did not arrive within {timeout_s:g} s (server.body_timeout_s).",
            status=408, code="request_timeout",
        ) from None


async def add_rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rules = _parsed_rules(await _body(request), request)
    try:
        added = state.scripted.runtime.add(rules, _test_id(request))
    except ValueError as exc:
        raise InvalidRequest(f"Too many rules: {exc}.", code="too_many_rules") from None
    described: list[dict[str, Any]] = [
        {"index": rule.index, "name": rule.name, "test_id": rule.test_id} for rule in added
    ]
    return web.json_response({"added": described}, status=201)


async def clear_rules(request: web.Request) -> web.Response:
    scripted = request.app[STATE].scripted
    test_id = _test_id(request)
    scripted.sequences.forget(test_id)
    return web.json_response({"deleted": scripted.runtime.clear(test_id)})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get(CONTROL_PREFIX + "journal", journal)
    app.router.add_delete(CONTROL_PREFIX + "journal", clear_journal)
    app.router.add_post(CONTROL_PREFIX + "rules", add_rules)
    app.router.add_delete(CONTROL_PREFIX + "rules", clear_rules)
