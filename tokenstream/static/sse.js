// An incremental server-sent events parser for fetch() bodies: text in, events out.
// It follows the WHATWG "event stream interpretation" rules, as EventSource does:
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//
// Feed it text, not bytes: decode each chunk with `TextDecoder.decode(chunk, {stream: true})`
// so a UTF-8 character split across chunks is held until it completes (never U+FFFD).

export class SSEParser {
  constructor() {
    this.started = false;
    this.partialLine = "";
    this.skipLF = false;
    this.data = [];
    this.eventType = "";
    this.lastEventId = "";
    this.retry = null;
  }

  /** Returns the events that `text` completes: {type, data, lastEventId, retry}. */
  feed(text) {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    // A CR ended the previous chunk: an LF starting this one is the second half of CRLF.
    if (this.skipLF && text.length > 0) {
      this.skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    const events = [];
    let start = 0;
    while (start < text.length) {
      const cr = text.indexOf("\r", start);
      const lf = text.indexOf("\n", start);
      if (cr === -1 && lf === -1) {
        this.partialLine += text.slice(start);
        break;
      }
      let end;
      let next;
      if (cr === -1 || (lf !== -1 && lf < cr)) {
        end = lf;
        next = lf + 1;
      } else {
        end = cr;
        next = cr + 1;
        if (next < text.length) {
          if (text[next] === "\n") next += 1;
        } else {
          this.skipLF = true;
        }
      }
      const line = this.partialLine + text.slice(start, end);
      this.partialLine = "";
      const event = this.processLine(line);
      if (event !== null) events.push(event);
      start = next;
    }
    return events;
  }

  /** End of stream: an unterminated event is discarded, as the spec says. */
  end() {
    this.partialLine = "";
    this.data = [];
    this.eventType = "";
    return [];
  }

  processLine(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return null; // a comment, e.g. the server's ": ping" heartbeat
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    if (field === "data") {
      this.data.push(value);
    } else if (field === "event") {
      this.eventType = value;
    } else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = Number(value);
    }
    return null;
  }

  dispatch() {
    const data = this.data;
    const type = this.eventType;
    this.data = [];
    this.eventType = "";
    if (data.length === 0) return null;
    return {
      type: type || "message",
      data: data.join("\n"),
      lastEventId: this.lastEventId,
      retry: this.retry,
    };
  }
}

/** Yields the events of a fetch() Response body as they arrive. */
export async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      yield* parser.feed(decoder.decode(value, { stream: true }));
    }
    yield* parser.feed(decoder.decode());
    parser.end();
  } finally {
    // Leaving early (sentinel seen, or the caller stopped) releases the connection.
    reader.cancel().catch(() => {});
  }
}
