// The two ways a browser frontend consumes a token stream:
//
// - EventSource on GET /v1/stream: the browser parses SSE; each token is a named event
//   (or "message"); the last event is the sentinel, after which we close the EventSource
//   (otherwise it would reconnect; the server gives the sentinel the id "done" and answers
//   a reconnect carrying Last-Event-ID: done with 204, which also stops it).
// - fetch + a streaming body reader on POST /v1/chat/completions, as OpenAI-style chat UIs
//   do: TextDecoder in stream mode, then our SSE parser (sse.js).
//
// Both report through the same callbacks and resolve to {status, message, finishReason}
// with status "done", "stopped" (the AbortSignal fired) or "error".

import { readEvents } from "./sse.js";

export const SENTINEL = "[DONE]";

function isSentinel(data, lastEventId) {
  return data === SENTINEL || lastEventId === "done";
}

function compact(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== null && v !== ""));
}

/** The query string of GET /v1/stream for these settings. */
export function streamQuery({
  prompt,
  model = "",
  profile,
  overrides = {},
  format = "json",
  eventName = "",
}) {
  return new URLSearchParams(
    compact({
      prompt,
      model, // needed when the server proxies an upstream; the page's pick from /v1/models
      format,
      event: eventName,
      profile,
      include_usage: format === "openai" ? "true" : null,
      ...overrides,
    }),
  );
}

/** The JSON body of POST /v1/chat/completions; pacing goes in the `tokenstream` object. */
export function chatBody({ model, messages, profile, overrides = {} }) {
  return {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    tokenstream: compact({ profile, ...overrides }),
  };
}

/** What one event's data means in a wire format: {text, tokens, usage, finishReason, error}. */
export function interpret(format, data) {
  if (format === "text") {
    // Errors are sent as an OpenAI error object in every format.
    if (data.startsWith('{"error":')) {
      try {
        return { error: JSON.parse(data).error.message };
      } catch {
        // not an error object after all: it is reply text
      }
    }
    return { text: data, tokens: null };
  }
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return { error: `unexpected event data: ${data.slice(0, 80)}` };
  }
  if (payload && payload.error) return { error: payload.error.message ?? String(payload.error) };
  if (format === "json") return { text: payload.token, tokens: payload.tokens };
  const result = {};
  if (payload.usage) result.usage = payload.usage;
  const choice = payload.choices?.[0];
  if (choice) {
    const content = choice.delta?.content;
    if (content) {
      result.text = content;
      result.tokens = null; // an OpenAI chunk does not say how many tokens it carries
    }
    if (choice.finish_reason) result.finishReason = choice.finish_reason;
  }
  return result;
}

/** Feeds one interpreted event to the callbacks; returns an error message or null. */
function deliver(item, on, state) {
  if (item.text !== undefined) on.text(item.text, item.tokens ?? null);
  if (item.usage) on.usage?.(item.usage);
  if (item.finishReason) state.finishReason = item.finishReason;
  if (item.error) state.error = item.error;
}

async function errorMessage(response) {
  const body = await response.text();
  try {
    return JSON.parse(body).error.message;
  } catch {
    return `HTTP ${response.status}: ${body.slice(0, 200)}`;
  }
}

/** EventSource reports a failed connection without its status or body: ask again to say why. */
async function explainFailure(url) {
  const controller = new AbortController();
  try {
    const response = await fetch(url, { signal: controller.signal });
    if (!response.ok) return await errorMessage(response);
    return "EventSource could not connect.";
  } catch (error) {
    return `Cannot reach the server (${error.message}).`;
  } finally {
    controller.abort();
  }
}

export function streamWithEventSource(request, on, signal) {
  const format = request.format ?? "json";
  const url = `/v1/stream?${streamQuery(request)}`;
  return new Promise((resolve) => {
    const source = new EventSource(url);
    const state = { finishReason: null, error: null };
    let opened = false;
    let settled = false;
    const settle = (result) => {
      if (settled) return;
      settled = true;
      source.close(); // closes the connection, and the server stops the stream's work
      signal.removeEventListener("abort", onAbort);
      resolve({ finishReason: state.finishReason, ...result });
    };
    const onAbort = () => settle({ status: "stopped" });
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) return settle({ status: "stopped" });

    source.addEventListener("open", () => {
      opened = true;
      on.open?.();
    });
    source.addEventListener(request.eventName || "message", (event) => {
      if (isSentinel(event.data, event.lastEventId)) {
        settle(state.error ? { status: "error", message: state.error } : { status: "done" });
        return;
      }
      deliver(interpret(format, event.data), on, state);
    });
    source.addEventListener("error", async () => {
      if (settled) return;
      if (opened) {
        // Reconnecting would replay the reply from the start: stop instead.
        settle({ status: "error", message: "The connection was lost before the end." });
        return;
      }
      source.close();
      settle({ status: "error", message: await explainFailure(url) });
    });
  });
}

export async function streamWithFetch(request, on, signal) {
  const state = { finishReason: null, error: null };
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(chatBody(request)),
      signal,
    });
  } catch (error) {
    if (signal.aborted) return { status: "stopped" };
    return { status: "error", message: `Cannot reach the server (${error.message}).` };
  }
  if (!response.ok) return { status: "error", message: await errorMessage(response) };
  on.open?.();
  try {
    for await (const event of readEvents(response)) {
      if (isSentinel(event.data, event.lastEventId)) {
        if (state.error) return { status: "error", message: state.error, finishReason: null };
        return { status: "done", finishReason: state.finishReason };
      }
      deliver(interpret("openai", event.data), on, state);
    }
  } catch (error) {
    if (signal.aborted) return { status: "stopped", finishReason: null };
    return { status: "error", message: `The stream broke off (${error.message}).` };
  }
  if (signal.aborted) return { status: "stopped", finishReason: null };
  return { status: "error", message: `The stream ended without the ${SENTINEL} sentinel.` };
}
