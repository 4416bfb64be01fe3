// The two ways a browser frontend consumes a token stream:
//
// - fetch + a streaming body reader, POST to the chosen dialect's endpoint
//   (/v1/chat/completions, /v1/messages, ...), as chat UIs do with their API: TextDecoder in
//   stream mode, then our SSE parser (sse.js), then the dialect's reader (dialects.js).
// - EventSource on GET /v1/stream: the browser parses SSE. In the formats text, json and
//   openai each token is a named event (or "message") and the last is the sentinel, after
//   which we close the EventSource (otherwise it would reconnect; the server would answer
//   that reconnect, whose Last-Event-ID names the stream's last event, with 204, which also
//   stops it). With format "dialect" the query asks for the dialect's own events
//   (dialect=...), whose reader knows the last one. A connection that breaks before the end
//   is left to the browser, which reconnects with Last-Event-ID: the server resumes the
//   stream after that event (the rest of the same reply, nothing twice), or answers 204/404,
//   which closes the EventSource: only then is it an error.
//
// Both report through the same callbacks (text, reasoning, toolCall, toolArguments, usage,
// raw) and resolve to {status, message, finishReason} with status "done", "stopped" (the
// AbortSignal fired) or "error". The error's message says what went wrong as a chat UI
// would: an HTTP error's status and the API's message, the stream's own error event, an
// event that is not JSON, a stream that ended without its last event, a broken connection.

import { DIALECT_CLIENTS, chatBody, parseEvent, tokenstreamOptions } from "./dialects.js";
import { readEvents } from "./sse.js";

export { chatBody };

export const SENTINEL = "[DONE]";

function isSentinel(data, lastEventId) {
  return data === SENTINEL || lastEventId === "done";
}

/** The query string of GET /v1/stream for these settings. */
export function streamQuery({
  prompt,
  model = "",
  profile,
  overrides = {},
  format = "json",
  eventName = "",
  dialect = null,
  fault = "",
}) {
  const ownEvents = format === "dialect"; // the dialect names its own events
  const query = {
    prompt,
    model, // needed when the server proxies an upstream; the page's pick from /v1/models
    format: ownEvents ? null : format,
    dialect: ownEvents ? dialect.name : null,
    event: ownEvents ? null : eventName,
    // OpenAI chunks carry usage only when asked (the other dialects always do)
    include_usage: format === "openai" || (ownEvents && dialect.name === "openai-chat") ? "true" : null,
    ...tokenstreamOptions(profile, overrides, fault),
  };
  return new URLSearchParams(Object.entries(query).filter(([, v]) => v !== null && v !== ""));
}

/** What one event's data means in tokenstream's own formats: {text, tokens} or {error};
 * `name` says which event in the error when the data is not JSON. */
export function interpret(format, data, name = "") {
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
    payload = parseEvent(data, name);
  } catch (error) {
    return { error: error.message };
  }
  if (payload.error) return { error: payload.error.message ?? String(payload.error) };
  return { text: payload.token, tokens: payload.tokens };
}

/** Feeds a reader's items to the callbacks; the finish reason and an error go in `state`. */
function deliver(items, on, state) {
  for (const item of items) {
    if (item.text !== undefined) on.text(item.text, item.tokens ?? null);
    if (item.reasoning !== undefined) on.reasoning?.(item.reasoning);
    if (item.toolCall) on.toolCall?.(item.toolCall);
    if (item.toolArguments) on.toolArguments?.(item.toolArguments);
    if (item.usage) on.usage?.(item.usage);
    if (item.finishReason) state.finishReason = item.finishReason;
    if (item.error) state.error = item.error;
  }
}

function ended(state) {
  if (state.error) return { status: "error", message: state.error, finishReason: null };
  return { status: "done", finishReason: state.finishReason };
}

/** An HTTP error as a chat UI shows it: the status, the API's message, when to retry. */
async function errorMessage(response) {
  const body = await response.text();
  let message;
  try {
    message = JSON.parse(body).error.message; // OpenAI's and Anthropic's error bodies alike
  } catch {
    message = body.slice(0, 200);
  }
  const retryAfter = response.headers.get("Retry-After");
  return `HTTP ${response.status}: ${message}${retryAfter ? ` (retry after ${retryAfter} s)` : ""}`;
}

function incomplete(ending, how) {
  return `The stream ended before the reply was complete: ${how} ${ending}.`;
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

/**
 * How an EventSource stream is read: the event types to listen to, a reader (the
 * dialect's, for OpenAI chunks and a dialect's own events; null for text and json), and
 * the event a complete stream ends with.
 */
function eventSourceReading(request) {
  const format = request.format ?? "json";
  if (format === "dialect") {
    const client = DIALECT_CLIENTS[request.dialect.name];
    return { types: client.events, reader: client.reader(), ending: client.ending };
  }
  const types = [request.eventName || "message"];
  const reader = format === "openai" ? DIALECT_CLIENTS["openai-chat"].reader() : null;
  return { types, reader, ending: SENTINEL };
}

export function streamWithEventSource(request, on, signal) {
  const format = request.format ?? "json";
  const url = `/v1/stream?${streamQuery(request)}`;
  const { types, reader, ending } = eventSourceReading(request);
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
    let events = 0;
    const listener = (event) => {
      events += 1;
      on.raw?.(event);
      if (reader !== null) {
        deliver(reader.read(event.type, event.data), on, state);
        if (reader.done || event.lastEventId === "done") settle(ended(state));
      } else if (isSentinel(event.data, event.lastEventId)) {
        settle(ended(state));
      } else {
        deliver([interpret(format, event.data, `#${events} (${event.type})`)], on, state);
        if (state.error) settle(ended(state)); // an error event, or one that cannot be read
      }
    };
    for (const type of types) source.addEventListener(type, listener);
    source.addEventListener("error", async () => {
      if (settled) return;
      if (opened && source.readyState === EventSource.CONNECTING && !state.error) {
        on.reconnecting?.(); // the browser reconnects; the server resumes the stream
        return;
      }
      if (opened) {
        // Closed: the server had nothing more for the reconnect (204) or did not know the
        // stream any longer (404). EventSource does not say which, nor why it broke.
        const message = incomplete(ending, "the connection closed before");
        settle(state.error ? ended(state) : { status: "error", message });
        return;
      }
      source.close();
      settle({ status: "error", message: await explainFailure(url) });
    });
  });
}

/** The fetch() call that streams `request` from its dialect's endpoint. */
export function fetchRequest(request) {
  const client = DIALECT_CLIENTS[request.dialect.name];
  return {
    url: request.dialect.path,
    init: {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...client.headers },
      body: JSON.stringify(client.body(request)),
    },
  };
}

export async function streamWithFetch(request, on, signal) {
  const state = { finishReason: null, error: null };
  const { url, init } = fetchRequest(request);
  let response;
  try {
    response = await fetch(url, { ...init, signal });
  } catch (error) {
    if (signal.aborted) return { status: "stopped" };
    return { status: "error", message: `Cannot reach the server (${error.message}).` };
  }
  if (!response.ok) return { status: "error", message: await errorMessage(response) };
  on.open?.();
  const client = DIALECT_CLIENTS[request.dialect.name];
  const reader = client.reader();
  try {
    for await (const event of readEvents(response)) {
      on.raw?.(event);
      deliver(reader.read(event.type, event.data), on, state);
      if (reader.done) return ended(state);
    }
  } catch (error) {
    if (signal.aborted) return { status: "stopped", finishReason: null };
    const broke = `The connection broke off before the reply was complete (${error.message}).`;
    return { status: "error", message: broke, finishReason: null };
  }
  if (signal.aborted) return { status: "stopped", finishReason: null };
  if (state.error) return ended(state); // an error event said why, and the ending is missing
  return { status: "error", message: incomplete(client.ending, "no"), finishReason: state.finishReason };
}
