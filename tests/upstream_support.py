"""Helpers for the upstream tests: a scriptable fake upstream, the streams of the three
upstream dialects (OpenAI chunks, Responses events, Anthropic events), a sim clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

UPSTREAM_MODEL = "upstream-model-2024"


def chunk(
    content: str | None = None,
    *,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    role: bool = False,
    model: str = UPSTREAM_MODEL,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` as an OpenAI server streams it."""
    body: dict[str, Any] = dict(delta or {})
    if role:
        body = {"role": "assistant", "content": "", "refusal": None, **body}
    if content is not None:
        body["content"] = content
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_upstream",
        "choices": [{"index": 0, "delta": body, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int, model: str = UPSTREAM_MODEL) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def sse(payload: Any, *, ensure_ascii: bool = False) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=ensure_ascii)
    return b"data: " + data.encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"


def reply_stream(
    deltas: Iterable[str], *, usage: bool = False, ensure_ascii: bool = False
) -> bytes:
    """A whole streamed reply: role chunk, one chunk per delta, finish, (usage), [DONE]."""
    out = sse(chunk(role=True))
    deltas = list(deltas)
    for delta in deltas:
        out += sse(chunk(delta), ensure_ascii=ensure_ascii)
    out += sse(chunk(finish="stop"))
    if usage:
        out += sse(usage_chunk(10, len(deltas)))
    return out + DONE


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


def openai_text(events: Iterable[ServerSentEvent]) -> str:
    text = ""
    for event in events:
        if event.data == "[DONE]":
            break
        payload = json.loads(event.data)
        for choice in payload.get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


Behaviour = Callable[[web.Request, "FakeUpstream"], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    """An OpenAI-compatible server whose answer is a script; it records what it saw.

    ``closed`` is set, and ``closed_at`` stamped on the loop's clock, when a streaming
    handler ends for any reason, in particular when the proxy closes the connection
    (the test server runs with handler cancellation, so that cancels the handler at once).
    """

    behaviour: Behaviour | None = None
    seen: list[Seen] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: float | None = None
    cancelled: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/responses", self._handle)
        app.router.add_post("/v1/messages", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(dict(request.headers), None))
        model = {"id": UPSTREAM_MODEL, "object": "model", "created": 1, "owned_by": "upstream"}
        if "model" not in request.match_info:
            return web.json_response({"object": "list", "data": [model]})
        if request.match_info["model"] != UPSTREAM_MODEL:
            return web.json_response(
                {"error": {"message": "no such model", "type": "invalid_request_error",
                           "param": "model", "code": "model_not_found"}},
                status=404,
            )
        return web.json_response(model)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(Seen(dict(request.headers), json.loads(raw)))
        assert self.behaviour is not None
        try:
            return await self.behaviour(request, self)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed_at = asyncio.get_running_loop().time()
            self.closed.set()


async def start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def streams(*parts: bytes, then: str = "end", gate: asyncio.Event | None = None) -> Behaviour:
    """Write each part as its own write; wait for ``gate`` if given; then ``end`` (close
    cleanly), ``hang`` or ``drop`` (close the connection mid-body)."""

    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = await start_stream(request)
        for part in parts:
            await response.write(part)
        if gate is not None:
            await gate.wait()
        if then == "hang":
            await asyncio.Event().wait()
        if then == "drop":
            assert request.transport is not None
            request.transport.close()  # mid-body, without the chunked terminator
            return response
        await response.write_eof()
        return response

    return behaviour


def answers(status: int, body: Any, headers: dict[str, str] | None = None) -> Behaviour:
    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        if isinstance(body, bytes | str):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return behaviour


def hangs_before_answering() -> Behaviour:
    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return behaviour


class SimClock:
    """Discrete-event time for several tasks sleeping on one clock.

    ``run`` lets every task go until all of them wait, then moves time to the earliest
    deadline and wakes the tasks due then. With no I/O involved this is deterministic: a
    fixed number of loop turns lets every ready task reach its next wait.
    """

    _TURNS = 100

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), waiter))
        await waiter

    async def run(self, work: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(work)
        while True:
            for _ in range(self._TURNS):
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            if not self._sleepers:
                raise RuntimeError("deadlock: the work waits and nothing sleeps on the clock")
            deadline = self._sleepers[0][0]
            self._now = deadline
            while self._sleepers and self._sleepers[0][0] <= deadline:
                _, _, waiter = heapq.heappop(self._sleepers)
                if not waiter.done():
                    waiter.set_result(None)


async def timed(clock: SimClock, script: Iterable[tuple[float, Any]]) -> AsyncIterator[Any]:
    """A live source: each item at its time on ``clock``."""
    for at, item in script:
        await clock.sleep_until(at)
        yield item


# -- one reply in each upstream dialect -----------------------------------------------------


@dataclass(frozen=True)
class Script:
    """A reply as an upstream streams it: reasoning, text, a tool call, its ending."""

    text: list[str]
    reasoning: list[str] = field(default_factory=list)
    call: tuple[str, str, list[str]] | None = None
    """``(call_id, name, argument fragments)``."""
    finish: str = "stop"
    """In OpenAI's words: ``stop``, ``length`` or ``tool_calls``."""
    prompt_tokens: int = 25
    completion_tokens: int = 18
    model: str = UPSTREAM_MODEL
    error: str | None = None
    """An in-stream error after the text (instead of the call and the ending)."""


def named_event(event: str, payload: dict[str, Any], *, ensure_ascii: bool = False) -> bytes:
    data = json.dumps(payload, ensure_ascii=ensure_ascii)
    return f"event: {event}\ndata: {data}\n\n".encode()


def chat_stream(script: Script, *, ensure_ascii: bool = False) -> list[bytes]:
    model = script.model
    events = [sse(chunk(role=True, model=model))]
    events += [sse(chunk(delta={"reasoning_content": r}, model=model)) for r in script.reasoning]
    events += [sse(chunk(t, model=model), ensure_ascii=ensure_ascii) for t in script.text]
    if script.error is not None:
        return [*events, sse({"error": {"message": script.error, "type": "server_error",
                                        "param": None, "code": "overloaded"}})]
    if script.call is not None:
        call_id, name, fragments = script.call
        start = {"index": 0, "id": call_id, "type": "function",
                 "function": {"name": name, "arguments": ""}}
        events.append(sse(chunk(delta={"tool_calls": [start]}, model=model)))
        events += [
            sse(chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": f}}]},
                      model=model))
            for f in fragments
        ]
    events.append(sse(chunk(finish=script.finish, model=model)))
    events.append(sse(usage_chunk(script.prompt_tokens, script.completion_tokens, model)))
    return [*events, DONE]


def responses_stream(script: Script, *, ensure_ascii: bool = False) -> list[bytes]:
    sequence = itertools.count()
    response: dict[str, Any] = {
        "id": "resp_upstream", "object": "response", "created_at": 1_700_000_000,
        "status": "in_progress", "model": script.model, "output": [], "usage": None,
        "error": None, "incomplete_details": None, "instructions": None,
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    }

    def event(kind: str, **fields: Any) -> bytes:
        return named_event(kind, {"type": kind, "sequence_number": next(sequence), **fields},
                           ensure_ascii=ensure_ascii)

    events = [event("response.created", response=response),
              event("response.in_progress", response=response)]
    output: list[dict[str, Any]] = []
    if script.reasoning:
        item = {"id": "rs_1", "type": "reasoning", "summary": []}
        events.append(event("response.output_item.added", output_index=len(output), item=item))
        events += [
            event("response.reasoning_summary_text.delta", item_id="rs_1",
                  output_index=len(output), summary_index=0, delta=r)
            for r in script.reasoning
        ]
        done = {**item, "summary": [{"type": "summary_text", "text": "".join(script.reasoning)}]}
        events.append(event("response.output_item.done", output_index=len(output), item=done))
        output.append(done)
    message = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant",
               "content": []}
    where = {"item_id": "msg_1", "output_index": len(output), "content_index": 0}
    events.append(event("response.output_item.added", output_index=len(output), item=message))
    events.append(event("response.content_part.added", **where,
                        part={"type": "output_text", "text": "", "annotations": []}))
    events += [event("response.output_text.delta", **where, delta=t, logprobs=[])
               for t in script.text]
    if script.error is not None:
        return [*events, event("error", code="server_error", message=script.error, param=None)]
    text = "".join(script.text)
    part = {"type": "output_text", "text": text, "annotations": []}
    events.append(event("response.output_text.done", **where, text=text, logprobs=[]))
    events.append(event("response.content_part.done", **where, part=part))
    done = {**message, "status": "completed", "content": [part]}
    events.append(event("response.output_item.done", output_index=len(output), item=done))
    output.append(done)
    if script.call is not None:
        call_id, name, fragments = script.call
        call = {"id": "fc_1", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}
        index = len(output)
        events.append(event("response.output_item.added", output_index=index, item=call))
        events += [event("response.function_call_arguments.delta", item_id="fc_1",
                         output_index=index, delta=f) for f in fragments]
        arguments = "".join(fragments)
        events.append(event("response.function_call_arguments.done", item_id="fc_1",
                            output_index=index, arguments=arguments))
        call = {**call, "status": "completed", "arguments": arguments}
        events.append(event("response.output_item.done", output_index=index, item=call))
        output.append(call)
    usage = {"input_tokens": script.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": script.completion_tokens,
             "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": script.prompt_tokens + script.completion_tokens}
    if script.finish == "length":
        final = {**response, "status": "incomplete", "output": output, "usage": usage,
                 "incomplete_details": {"reason": "max_output_tokens"}}
        return [*events, event("response.incomplete", response=final)]
    final = {**response, "status": "completed", "output": output, "usage": usage}
    return [*events, event("response.completed", response=final)]


ANTHROPIC_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_stream(script: Script, *, ensure_ascii: bool = False) -> list[bytes]:
    def event(kind: str, **fields: Any) -> bytes:
        return named_event(kind, {"type": kind, **fields}, ensure_ascii=ensure_ascii)

    message = {"id": "msg_upstream", "type": "message", "role": "assistant", "content": [],
               "model": script.model, "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": script.prompt_tokens, "output_tokens": 1}}
    events = [event("message_start", message=message)]
    index = 0
    if script.reasoning:
        events.append(event("content_block_start", index=index,
                            content_block={"type": "thinking", "thinking": "", "signature": ""}))
        events.append(event("ping"))
        events += [event("content_block_delta", index=index,
                         delta={"type": "thinking_delta", "thinking": r})
                   for r in script.reasoning]
        events.append(event("content_block_delta", index=index,
                            delta={"type": "signature_delta", "signature": "c2ln"}))
        events.append(event("content_block_stop", index=index))
        index += 1
    events.append(event("content_block_start", index=index,
                        content_block={"type": "text", "text": ""}))
    events += [event("content_block_delta", index=index,
                     delta={"type": "text_delta", "text": t}) for t in script.text]
    if script.error is not None:
        return [*events, event("error", error={"type": "overloaded_error",
                                               "message": script.error})]
    events.append(event("content_block_stop", index=index))
    if script.call is not None:
        index += 1
        call_id, name, fragments = script.call
        events.append(event("content_block_start", index=index, content_block={
            "type": "tool_use", "id": call_id, "name": name, "input": {}}))
        events += [event("content_block_delta", index=index,
                         delta={"type": "input_json_delta", "partial_json": f})
                   for f in fragments]
        events.append(event("content_block_stop", index=index))
    events.append(event(
        "message_delta",
        delta={"stop_reason": ANTHROPIC_STOP_REASONS[script.finish], "stop_sequence": None},
        usage={"output_tokens": script.completion_tokens},
    ))
    return [*events, event("message_stop")]


DIALECT_STREAMS: dict[str, Callable[..., list[bytes]]] = {
    "openai-chat": chat_stream,
    "openai-responses": responses_stream,
    "anthropic": anthropic_stream,
}
"""The stream of a ``Script`` in each ``upstream.dialect``."""


def error_answer(dialect: str, status: int, message: str) -> dict[str, Any]:
    """An HTTP error body as the upstream's API sends it."""
    if dialect == "anthropic":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = {429: "requests"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def bursts(events: list[bytes], size: int) -> list[bytes]:
    """The stream cut into writes of ``size`` bytes: several events in one write, events and
    UTF-8 sequences cut across two."""
    raw = b"".join(events)
    return [raw[i : i + size] for i in range(0, len(raw), size)]
