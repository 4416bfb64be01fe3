// The page's side of each API dialect: the request body its endpoint takes, and a reader
// that turns its server-sent events back into what the page shows.
//
// Which dialects exist, their titles and endpoints come from the server (GET /v1/dialects,
// the one table in tokenstream/dialects/catalog.py); this module knows how to speak each.
// A dialect the server lists but this module does not know is left out of the selector.
//
// A reader's read(type, data) returns items, in order:
//   {text}  {reasoning}  {toolCall: {key, id, name}}  {toolArguments: {key, arguments}}
//   {usage: {completion_tokens}}  {finishReason}  {error}
// and sets reader.done when the dialect's last event (or an error that ends it) arrived.
// An event it cannot read (not JSON) is an error naming the event, and ends the reading, as
// it ends the official SDKs'.

/** The `tokenstream` object (and GET /v1/stream's query): profile, overrides and the fault
 * spec to inject, without the empty ones. */
export function tokenstreamOptions(profile, overrides = {}, fault = "") {
  return Object.fromEntries(
    Object.entries({ profile, ...overrides, fault }).filter(([, v]) => v !== null && v !== "" && v !== undefined),
  );
}

/** Anthropic requires max_tokens; this is what the page asks for. */
export const ANTHROPIC_MAX_TOKENS = 4096;

/** An event's JSON data; `name` says which event in the error when it is not a JSON object. */
export function parseEvent(data, name) {
  let value;
  try {
    value = JSON.parse(data);
  } catch (error) {
    throw new Error(`Malformed event ${name}: ${error.message}: ${data.slice(0, 80)}`);
  }
  if (value && typeof value === "object") return value;
  throw new Error(`Malformed event ${name}: not a JSON object: ${data.slice(0, 80)}`);
}

class Reader {
  constructor() {
    this.done = false;
    this.events = 0;
  }

  read(type, data) {
    if (this.done) return [];
    this.events += 1;
    try {
      return this.items(type, data);
    } catch (error) {
      this.done = true;
      return [{ error: error.message }];
    }
  }

  /** The current event's data, parsed. */
  parse(type, data) {
    return parseEvent(data, `#${this.events} (${type})`);
  }
}

// ------------------------------------------------------------ OpenAI chat completions

/** The body of POST /v1/chat/completions; pacing and a fault go in the `tokenstream` object. */
export function chatBody({ model, messages, profile, overrides = {}, fault = "" }) {
  return {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    tokenstream: tokenstreamOptions(profile, overrides, fault),
  };
}

class ChatReader extends Reader {
  constructor() {
    super();
    this.calls = new Set();
  }

  items(type, data) {
    if (data === "[DONE]") {
      this.done = true;
      return [];
    }
    const chunk = this.parse(type, data);
    if (chunk.error) return [{ error: chunk.error.message ?? String(chunk.error) }]; // [DONE] follows
    const items = [];
    for (const choice of chunk.choices ?? []) {
      const delta = choice.delta ?? {};
      if (delta.reasoning_content) items.push({ reasoning: delta.reasoning_content });
      if (delta.content) items.push({ text: delta.content });
      for (const call of delta.tool_calls ?? []) {
        const key = String(call.index ?? 0);
        if (!this.calls.has(key)) {
          this.calls.add(key);
          items.push({ toolCall: { key, id: call.id ?? "", name: call.function?.name ?? "" } });
        }
        if (call.function?.arguments) items.push({ toolArguments: { key, arguments: call.function.arguments } });
      }
      if (choice.finish_reason) items.push({ finishReason: choice.finish_reason });
    }
    if (chunk.usage) items.push({ usage: chunk.usage });
    return items;
  }
}

// ------------------------------------------------------------ OpenAI Responses

function responsesBody({ model, messages, profile, overrides = {}, fault = "" }) {
  return {
    model,
    input: messages.map(({ role, content }) => ({ type: "message", role, content })),
    stream: true,
    tokenstream: tokenstreamOptions(profile, overrides, fault),
  };
}

class ResponsesReader extends Reader {
  items(type, data) {
    const event = this.parse(type, data);
    const key = String(event.output_index ?? 0);
    switch (event.type) {
      case "response.output_text.delta":
        return [{ text: event.delta }];
      case "response.reasoning_summary_text.delta":
      case "response.reasoning_text.delta":
        return [{ reasoning: event.delta }];
      case "response.output_item.added":
        if (event.item?.type !== "function_call") return [];
        return [{ toolCall: { key, id: event.item.call_id ?? "", name: event.item.name ?? "" } }];
      case "response.function_call_arguments.delta":
        return [{ toolArguments: { key, arguments: event.delta } }];
      case "response.completed":
      case "response.incomplete": {
        this.done = true;
        const response = event.response ?? {};
        const items = [{ finishReason: response.incomplete_details?.reason ?? response.status }];
        if (response.usage) items.push({ usage: { completion_tokens: response.usage.output_tokens } });
        return items;
      }
      case "response.failed":
        this.done = true;
        return [{ error: event.response?.error?.message ?? "the response failed" }];
      case "error":
        this.done = true;
        return [{ error: event.message }];
      default:
        return [];
    }
  }
}

// ------------------------------------------------------------ Anthropic Messages

function anthropicBody({ model, messages, profile, overrides = {}, fault = "" }) {
  return {
    model,
    max_tokens: ANTHROPIC_MAX_TOKENS,
    messages,
    stream: true,
    tokenstream: tokenstreamOptions(profile, overrides, fault),
  };
}

class AnthropicReader extends Reader {
  constructor() {
    super();
    this.toolBlocks = new Set();
  }

  items(type, data) {
    const event = this.parse(type, data);
    const key = String(event.index ?? 0);
    switch (event.type) {
      case "content_block_start":
        if (event.content_block?.type !== "tool_use") return [];
        this.toolBlocks.add(key);
        return [{ toolCall: { key, id: event.content_block.id ?? "", name: event.content_block.name ?? "" } }];
      case "content_block_delta": {
        const delta = event.delta ?? {};
        if (delta.type === "text_delta") return [{ text: delta.text }];
        if (delta.type === "thinking_delta") return [{ reasoning: delta.thinking }];
        if (delta.type === "input_json_delta" && delta.partial_json) {
          return [{ toolArguments: { key, arguments: delta.partial_json } }];
        }
        return []; // signature_delta
      }
      case "message_delta": {
        const items = [];
        if (event.delta?.stop_reason) items.push({ finishReason: event.delta.stop_reason });
        if (event.usage?.output_tokens !== undefined) {
          items.push({ usage: { completion_tokens: event.usage.output_tokens } });
        }
        return items;
      }
      case "message_stop":
        this.done = true;
        return [];
      case "error":
        this.done = true;
        return [{ error: event.error?.message ?? "error" }];
      default:
        return []; // message_start, content_block_stop, ping
    }
  }
}

// ------------------------------------------------------------ Vercel AI SDK UI message stream

const chatId = crypto.randomUUID().replaceAll("-", "");

/** The body useChat's DefaultChatTransport sends: UI messages made of parts (each message's
 * id is its place in this page's chat, so the same history gives the same body). */
function aiSdkBody({ messages, profile, overrides = {}, fault = "" }) {
  return {
    id: chatId,
    messages: messages.map(({ role, content }, index) => ({
      id: `${chatId}-${index}`,
      role,
      parts: [{ type: "text", text: content }],
    })),
    trigger: "submit-message",
    tokenstream: tokenstreamOptions(profile, overrides, fault),
  };
}

class AISDKReader extends Reader {
  items(type, data) {
    if (data === "[DONE]") {
      this.done = true;
      return [];
    }
    const part = this.parse(type, data);
    const key = part.toolCallId ?? "";
    switch (part.type) {
      case "text-delta":
        return [{ text: part.delta }];
      case "reasoning-delta":
        return [{ reasoning: part.delta }];
      case "tool-input-start":
        return [{ toolCall: { key, id: key, name: part.toolName ?? "" } }];
      case "tool-input-delta":
        return [{ toolArguments: { key, arguments: part.inputTextDelta } }];
      case "finish":
        return part.finishReason ? [{ finishReason: part.finishReason }] : [];
      case "error":
        return [{ error: part.errorText }]; // [DONE] follows
      default:
        return [];
    }
  }
}

// ------------------------------------------------------------ the table

const RESPONSES_EVENTS = [
  "response.created", "response.in_progress", "response.output_item.added",
  "response.content_part.added", "response.output_text.delta", "response.output_text.done",
  "response.content_part.done", "response.output_item.done", "response.reasoning_summary_part.added",
  "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
  "response.reasoning_summary_part.done", "response.reasoning_text.delta", "response.reasoning_text.done",
  "response.function_call_arguments.delta", "response.function_call_arguments.done",
  "response.completed", "response.incomplete", "response.failed", "error",
];

const ANTHROPIC_EVENTS = [
  "message_start", "content_block_start", "content_block_delta", "content_block_stop",
  "message_delta", "message_stop", "ping", "error",
];

/**
 * By the names of GET /v1/dialects. `events`: the event types an EventSource listens to
 * (it hands a listener only the events of the type it listens to; unnamed ones are
 * "message"). `ending`: the event a complete stream ends with, named when it is missing.
 */
export const DIALECT_CLIENTS = {
  "openai-chat": { body: chatBody, reader: () => new ChatReader(), events: ["message"], ending: "[DONE]" },
  "openai-responses": {
    body: responsesBody,
    reader: () => new ResponsesReader(),
    events: RESPONSES_EVENTS,
    ending: "response.completed",
  },
  anthropic: {
    body: anthropicBody,
    reader: () => new AnthropicReader(),
    events: ANTHROPIC_EVENTS,
    ending: "message_stop",
    headers: { "anthropic-version": "2023-06-01" },
  },
  "ai-sdk-ui": { body: aiSdkBody, reader: () => new AISDKReader(), events: ["message"], ending: "[DONE]" },
};
