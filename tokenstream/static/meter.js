// What the client measures about one stream. Pure arithmetic on times the caller passes in
// (milliseconds from performance.now()), so it can be checked with made-up numbers.
//
// Definitions match `tokenstream stream` (tokenstream/client.py):
//   time to first token = arrival of the first text event - moment the request was sent
//   tokens/s            = tokens after the first event / (last arrival - first arrival)

export class StreamMeter {
  constructor(startMs) {
    this.startMs = startMs;
    this.arrivals = [];
    this.counts = []; // tokens per event; 1 when the format does not say
    this.countsExact = true;
    this.reportedTokens = null; // completion_tokens from a usage chunk, when one came
    this.endMs = null;
  }

  /** A text event arrived at `atMs` carrying `tokens` tokens (null: unknown). */
  record(atMs, tokens) {
    this.arrivals.push(atMs);
    if (tokens === null || tokens === undefined) {
      this.counts.push(1);
      this.countsExact = false;
    } else {
      this.counts.push(tokens);
    }
  }

  /** The server's own count (OpenAI usage chunk). */
  reportTokens(completionTokens) {
    this.reportedTokens = completionTokens;
  }

  finish(atMs) {
    this.endMs = atMs;
  }

  get events() {
    return this.arrivals.length;
  }

  get countedTokens() {
    return this.counts.reduce((sum, n) => sum + n, 0);
  }

  get tokens() {
    return this.reportedTokens ?? this.countedTokens;
  }

  /** True when the token figures are estimates (event counts, or usage spread over events). */
  get estimated() {
    if (this.countsExact) return false;
    return this.reportedTokens === null || this.reportedTokens !== this.countedTokens;
  }

  get ttftMs() {
    return this.arrivals.length ? this.arrivals[0] - this.startMs : null;
  }

  /** Milliseconds between consecutive text events. */
  get gapsMs() {
    const gaps = [];
    for (let i = 1; i < this.arrivals.length; i += 1) {
      gaps.push(this.arrivals[i] - this.arrivals[i - 1]);
    }
    return gaps;
  }

  get tokensPerSecond() {
    if (this.arrivals.length < 2) return null;
    const spanMs = this.arrivals[this.arrivals.length - 1] - this.arrivals[0];
    if (spanMs <= 0) return null;
    const counted = this.countedTokens;
    // With a usage total but per-event counts unknown, the first event's share is estimated.
    const firstTokens = (this.counts[0] * this.tokens) / counted;
    return (this.tokens - firstTokens) / (spanMs / 1000);
  }

  /** Request sent -> last text event (or -> end, while nothing arrived). */
  get durationMs() {
    const last = this.arrivals.length ? this.arrivals[this.arrivals.length - 1] : this.endMs;
    return last === null ? null : last - this.startMs;
  }

  /** [[ms since the request, tokens received so far]] per event, for a timeline. */
  cumulative() {
    const scale = this.tokens / (this.countedTokens || 1);
    let total = 0;
    return this.arrivals.map((at, index) => {
      total += this.counts[index] * scale;
      return [at - this.startMs, total];
    });
  }

  get maxGapMs() {
    const gaps = this.gapsMs;
    return gaps.length ? Math.max(...gaps) : null;
  }
}
