// The page: chat view, compare view, and what connects them to the transports and meters.

import { DIALECT_CLIENTS } from "./dialects.js";
import { StreamMeter } from "./meter.js";
import { renderGapPlot, renderTimeline } from "./plot.js";
import { fetchRequest, streamQuery, streamWithEventSource, streamWithFetch } from "./transports.js";

const $ = (selector, root = document) => root.querySelector(selector);

const page = {
  profiles: {},
  defaultProfile: null,
  model: "tokenstream-1",
  dialects: {}, // by name: {name, title, path} from GET /v1/dialects, those this page speaks
  history: [], // the chat so far, {role, content}, sent with each fetch request
  chatRun: null,
  compareRuns: null,
};

// ---------------------------------------------------------------- formatting

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 10000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

function rate(meter) {
  const value = meter.tokensPerSecond;
  if (value === null) return "–";
  return `${meter.estimated ? "≈" : ""}${value.toFixed(1)}`;
}

function describeProfile(profile) {
  const parts = [
    profile.tokens_per_second ? `${profile.tokens_per_second} tokens/s` : "unpaced",
    `TTFT ${profile.ttft_ms} ms`,
    `jitter ${profile.jitter}`,
  ];
  if (profile.chunk_tokens > 1) parts.push(`${profile.chunk_tokens} tokens per event`);
  if (profile.pause_ms) parts.push(`pause ${profile.pause_ms} ms`);
  return parts.join(" · ");
}

/** Finish reasons in each dialect's words: a reply cut at its token limit, and one that
 * simply ended (not worth a mention). */
const CUT_SHORT = new Set(["length", "max_tokens", "max_output_tokens"]);
const ENDED = new Set(["stop", "end_turn", "completed"]);

function summary(meter, result) {
  const parts = [`${meter.estimated ? "≈" : ""}${meter.tokens} ${meter.tokens === 1 ? "token" : "tokens"}`];
  if (meter.ttftMs !== null) parts.push(`first token ${ms(meter.ttftMs)}`);
  if (meter.tokensPerSecond !== null) parts.push(`${rate(meter)} tokens/s`);
  if (CUT_SHORT.has(result.finishReason)) parts.push("cut at max tokens");
  else if (result.finishReason && !ENDED.has(result.finishReason)) parts.push(`finish ${result.finishReason}`);
  if (result.status === "stopped") parts.push("stopped");
  return parts.join(" · ");
}

function outcome(result) {
  if (result.status === "error") return `error: ${result.message}`;
  if (result.status === "stopped") return "stopped";
  return CUT_SHORT.has(result.finishReason) ? "done (cut at max tokens)" : "done";
}

// ---------------------------------------------------------------- stats and plot

function statsInto(slot) {
  const stats = $("#stats-template").content.firstElementChild.cloneNode(true);
  slot.replaceChildren(stats);
  return stats;
}

function renderStats(stats, meter) {
  const set = (name, text) => {
    $(`[data-stat="${name}"]`, stats).textContent = text;
  };
  set("ttft", ms(meter.ttftMs));
  set("rate", rate(meter));
  set("tokens", meter.events ? `${meter.estimated ? "≈" : ""}${meter.tokens}` : "–");
  set("events", meter.events ? String(meter.events) : "–");
  set("duration", ms(meter.durationMs));
  set("max-gap", ms(meter.maxGapMs));
}

function targetGapMs(profileName, overrides) {
  const profile = page.profiles[profileName];
  if (!profile) return null;
  const tps = overrides.tokens_per_second ?? profile.tokens_per_second;
  return tps > 0 ? (1000 * profile.chunk_tokens) / tps : null;
}

// ---------------------------------------------------------------- server status

let healthTimer = null;
let healthChecksAfterEnd = 0;

async function refreshHealth() {
  clearTimeout(healthTimer);
  let active = null;
  try {
    const health = await getJSON("/healthz");
    active = health.active_streams;
    $("#active-streams").textContent = String(active);
  } catch {
    $("#active-streams").textContent = "?";
  }
  const busy = page.chatRun !== null || page.compareRuns !== null;
  if (busy) {
    healthChecksAfterEnd = 0;
    healthTimer = setTimeout(refreshHealth, 1000);
  } else if (active !== 0 && healthChecksAfterEnd < 10) {
    // The server notices a closed connection at once; show it reaching 0.
    healthChecksAfterEnd += 1;
    healthTimer = setTimeout(refreshHealth, 250);
  }
}

// ---------------------------------------------------------------- one stream

function transport() {
  return document.querySelector('input[name="transport"]:checked').value;
}

function dialect() {
  return page.dialects[$("#dialect").value];
}

function eventSourceOptions() {
  const format = $("#es-format").value;
  return { format, eventName: format === "dialect" ? "" : $("#es-event").value.trim() };
}

/**
 * Starts one stream. `view.text(text)` gets each piece of reply text, `view.reasoning`,
 * `view.toolCall`, `view.toolArguments` and `view.raw` (each event) what else arrives, if
 * the view has them; `view.update(meter)` is called at most once per frame while tokens
 * arrive, and once at the end. Reasoning and tool-call arguments are paced like text, so
 * the meter counts them too.
 */
function startStream(kind, request, view) {
  const controller = new AbortController();
  const meter = new StreamMeter(performance.now());
  let frame = 0;
  const update = () => {
    frame = 0;
    view.update(meter);
  };
  const arrived = (tokens) => {
    meter.record(performance.now(), tokens);
    if (!frame) frame = requestAnimationFrame(update);
  };
  const on = {
    text(text, tokens) {
      arrived(tokens);
      view.text(text);
    },
    reasoning(text) {
      arrived(null);
      view.reasoning?.(text);
    },
    toolCall(call) {
      view.toolCall?.(call);
    },
    toolArguments(part) {
      arrived(null);
      view.toolArguments?.(part);
    },
    usage(usage) {
      meter.reportTokens(usage.completion_tokens);
    },
    raw(event) {
      view.raw?.(event);
    },
    reconnecting() {
      view.reconnecting?.();
    },
  };
  const stream = kind === "eventsource" ? streamWithEventSource : streamWithFetch;
  const done = stream(request, on, controller.signal).then((result) => {
    meter.finish(performance.now());
    cancelAnimationFrame(frame);
    update();
    return result;
  });
  return { controller, meter, done };
}

function requestFor(kind, { prompt, messages, profile, overrides, fault = "" }) {
  if (kind === "eventsource") {
    return { prompt, model: page.model, profile, overrides, fault, dialect: dialect(), ...eventSourceOptions() };
  }
  return { model: page.model, messages, profile, overrides, fault, dialect: dialect() };
}

function preview(kind, request) {
  if (kind === "eventsource") {
    const lines = [`const source = new EventSource("/v1/stream?${streamQuery(request)}");`];
    if (request.format === "dialect") {
      const types = DIALECT_CLIENTS[request.dialect.name].events;
      lines.push(`for (const type of ${JSON.stringify(types)})`);
      lines.push("  source.addEventListener(type, (e) => …);");
    } else {
      lines.push(`source.addEventListener("${request.eventName || "message"}", (e) => …);`);
    }
    return lines.join("\n");
  }
  const { url, init } = fetchRequest(request);
  const ownHeaders = DIALECT_CLIENTS[request.dialect.name].headers; // beside the JSON ones
  const headers = ownHeaders ? ` headers: ${JSON.stringify(ownHeaders)},` : "";
  const body = JSON.stringify(JSON.parse(init.body), null, 2);
  return `fetch("${url}", {method: "POST",${headers} body:\n${body}})`;
}

// ---------------------------------------------------------------- raw events

const RAW_EVENTS_SHOWN = 200; // the panel keeps the latest; a long reply does not grow it
const RAW_DATA_CHARS = 2000;

function rawEntry(event) {
  const item = document.createElement("li");
  const type = document.createElement("span");
  type.className = "raw-type";
  type.textContent = event.type;
  const data = document.createElement("code");
  data.className = "raw-data";
  const text = event.data;
  data.textContent = text.length > RAW_DATA_CHARS ? `${text.slice(0, RAW_DATA_CHARS)}…` : text;
  item.append(type, data);
  return item;
}

/**
 * Clears the raw-event panel; `add(event)` shows one more event in it. Events are added once
 * per frame, in a batch (a fast stream costs one layout per frame, not one per event);
 * `flush()` adds those still waiting at once.
 */
function rawEventLog() {
  const panel = $("#raw-events");
  const list = $("#raw-list");
  const count = $("#raw-count");
  list.replaceChildren();
  count.textContent = "0";
  let seen = 0;
  let pending = [];
  const flush = () => {
    if (pending.length === 0) return;
    const atEnd = !panel.open || list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(...pending.slice(-RAW_EVENTS_SHOWN).map(rawEntry));
    pending = [];
    for (let extra = list.childElementCount - RAW_EVENTS_SHOWN; extra > 0; extra -= 1) {
      list.firstElementChild.remove();
    }
    count.textContent = seen > RAW_EVENTS_SHOWN ? `latest ${RAW_EVENTS_SHOWN} of ${seen}` : String(seen);
    if (atEnd && panel.open) list.scrollTop = list.scrollHeight;
  };
  return {
    add(event) {
      seen += 1;
      if (pending.length === 0) requestAnimationFrame(flush);
      pending.push({ type: event.type, data: event.data });
    },
    flush,
  };
}

// ---------------------------------------------------------------- reasoning and tool calls

/** What a reply shows besides its text, each made when its first event arrives: reasoning
 * above the text, tool calls (name and arguments as they stream) below it. */
function replyExtras(bubble) {
  const text = $(".text", bubble);
  let reasoning = null;
  const calls = new Map();
  return {
    reasoning(piece) {
      if (reasoning === null) {
        const details = document.createElement("details");
        details.className = "reasoning";
        details.open = true;
        const title = document.createElement("summary");
        title.textContent = "Reasoning";
        const body = document.createElement("div");
        body.className = "reasoning-text";
        reasoning = document.createTextNode("");
        body.append(reasoning);
        details.append(title, body);
        text.before(details);
      }
      reasoning.appendData(piece);
    },
    toolCall({ key, id, name }) {
      let list = $(".tool-calls", bubble);
      if (list === null) {
        list = document.createElement("ol");
        list.className = "tool-calls";
        text.after(list);
      }
      const item = document.createElement("li");
      item.className = "tool-call";
      item.dataset.callId = id;
      const nameNode = document.createElement("code");
      nameNode.className = "tool-name";
      nameNode.textContent = name;
      const args = document.createElement("code");
      args.className = "tool-arguments";
      const argsText = document.createTextNode("");
      args.append(argsText);
      item.append(nameNode, args);
      list.append(item);
      calls.set(key, argsText);
    },
    toolArguments({ key, arguments: part }) {
      calls.get(key)?.appendData(part);
    },
  };
}

// ---------------------------------------------------------------- faults

const WAITING_AFTER_MS = 1000;

/** The fault spec the chat's requests ask the server to inject ("" for none). */
function faultSpec() {
  return $("#fault-spec").value.trim();
}

/** A preset fills in the spec; a spec typed by hand shows its preset, or "custom". */
function connectFaultControls() {
  const preset = $("#fault-preset");
  const spec = $("#fault-spec");
  preset.addEventListener("change", () => {
    spec.value = preset.value;
  });
  spec.addEventListener("input", () => {
    const text = spec.value.trim();
    const known = [...preset.options].some((option) => option.value === text && !option.hidden);
    preset.value = known ? text : "custom";
  });
}

/**
 * "waiting… 2.5 s" in the bubble while no event has arrived for a second or more (a stall,
 * a slow first token, slow headers), as a chat UI shows that it is still waiting.
 * `arrived()` resets it, `reconnecting()` says the connection broke and the browser is
 * reconnecting to resume it, `stop()` removes it.
 */
function waitingIndicator(bubble) {
  const note = document.createElement("div");
  note.className = "waiting";
  note.hidden = true;
  bubble.append(note);
  let last = performance.now();
  let why = "without an event";
  const timer = setInterval(() => {
    const idle = performance.now() - last;
    const appears = note.hidden && idle >= WAITING_AFTER_MS;
    note.hidden = idle < WAITING_AFTER_MS;
    note.textContent = `waiting… ${(idle / 1000).toFixed(1)} s ${why}`;
    if (appears) note.scrollIntoView({ block: "nearest" });
  }, 100);
  return {
    arrived() {
      last = performance.now();
      why = "without an event";
      note.hidden = true;
    },
    reconnecting() {
      why = "— the connection broke; reconnecting to resume the stream";
      bubble.dataset.reconnects = String(Number(bubble.dataset.reconnects ?? 0) + 1);
    },
    stop() {
      clearInterval(timer);
      note.remove();
    },
  };
}

// ---------------------------------------------------------------- chat view

function readOverrides() {
  const number = (id) => {
    const input = $(id);
    return input.value.trim() === "" ? null : Number(input.value);
  };
  return { tokens_per_second: number("#tps"), ttft_ms: number("#ttft"), jitter: number("#jitter") };
}

function addMessage(role, text) {
  $("#messages .intro")?.remove();
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "text";
  body.append(document.createTextNode(text));
  item.append(body);
  $("#messages").append(item);
  return item;
}

function scrollChat() {
  const list = $("#messages");
  list.scrollTop = list.scrollHeight;
}

function setChatBusy(busy) {
  $("#send").disabled = busy;
  $("#stop").disabled = !busy;
  for (const button of document.querySelectorAll(".suggestions button")) button.disabled = busy;
}

async function sendChat(prompt) {
  if (page.chatRun || !prompt.trim()) return;
  const kind = transport();
  const profile = $("#profile").value;
  const overrides = readOverrides();
  const messages = [...page.history, { role: "user", content: prompt }];
  const request = requestFor(kind, { prompt, messages, profile, overrides, fault: faultSpec() });

  addMessage("user", prompt);
  const bubble = addMessage("assistant", "");
  bubble.dataset.state = "waiting";
  bubble.dataset.transport = kind;
  bubble.dataset.dialect = request.dialect.name;
  bubble.setAttribute("aria-busy", "true"); // screen readers read the reply once, when done
  const textNode = bubble.querySelector(".text").firstChild;
  $("#request-preview").textContent = preview(kind, request);
  const stats = statsInto($("#chat-stats"));
  const plot = $("#chat-plot");
  const target = targetGapMs(profile, overrides);
  renderGapPlot(plot, [], { targetMs: target });
  scrollChat();

  setChatBusy(true);
  const rawLog = rawEventLog();
  const waiting = waitingIndicator(bubble);
  page.chatRun = startStream(kind, request, {
    ...replyExtras(bubble),
    raw(event) {
      rawLog.add(event);
      waiting.arrived();
    },
    reconnecting() {
      waiting.reconnecting();
    },
    text(text) {
      textNode.appendData(text);
      bubble.dataset.state = "streaming";
      scrollChat();
    },
    update(meter) {
      renderStats(stats, meter);
      renderGapPlot(plot, meter.gapsMs, { targetMs: target });
    },
  });
  refreshHealth();
  const result = await page.chatRun.done;
  const meter = page.chatRun.meter;
  page.chatRun = null;
  rawLog.flush();
  waiting.stop();

  bubble.dataset.state = result.status;
  bubble.removeAttribute("aria-busy");
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = summary(meter, result);
  if (result.status === "error") {
    const error = document.createElement("div");
    error.className = "error";
    error.textContent = result.message;
    bubble.append(error);
  }
  bubble.append(meta);
  page.history.push({ role: "user", content: prompt });
  if (textNode.data) page.history.push({ role: "assistant", content: textNode.data });
  setChatBusy(false);
  scrollChat();
  refreshHealth();
}

// ---------------------------------------------------------------- compare view

function setCompareBusy(busy) {
  $("#compare-run").disabled = busy;
  $("#compare-stop").disabled = !busy;
}

async function runCompare() {
  if (page.compareRuns) return;
  const prompt = $("#compare-prompt").value;
  if (!prompt.trim()) return;
  const kind = transport();
  const sides = [
    { name: "A", card: $("#result-a"), profile: $("#compare-a").value },
    { name: "B", card: $("#result-b"), profile: $("#compare-b").value },
  ];
  const meters = [];
  const redraw = () => {
    sides.forEach((side, index) => {
      renderStats(side.stats, meters[index]);
      renderGapPlot($(".plot", side.card), meters[index].gapsMs, {
        targetMs: targetGapMs(side.profile, {}),
      });
    });
    // one timeline with both streams on the same axes: the comparison at a glance
    renderTimeline(
      $("#compare-timeline"),
      sides.map((side, index) => ({
        label: `${side.name} · ${side.profile}`,
        className: side.name.toLowerCase(),
        points: meters[index].cumulative(),
      })),
    );
  };
  page.compareRuns = sides.map((side) => {
    const { card, profile } = side;
    card.dataset.state = "waiting";
    $(".profile-name", card).textContent = profile;
    $(".hint", card).textContent = describeProfile(page.profiles[profile]);
    $(".status", card).textContent = "waiting";
    const text = $(".text", card);
    text.replaceChildren(document.createTextNode(""));
    side.stats = statsInto($(".stats-slot", card));
    const request = requestFor(kind, {
      prompt,
      messages: [{ role: "user", content: prompt }],
      profile,
      overrides: {},
    });
    const run = startStream(kind, request, {
      text(piece) {
        text.firstChild.appendData(piece);
        card.dataset.state = "streaming";
        $(".status", card).textContent = "streaming";
      },
      update: () => redraw(),
    });
    meters.push(run.meter);
    return run;
  });
  redraw();
  setCompareBusy(true);
  refreshHealth();
  const results = await Promise.all(page.compareRuns.map((run) => run.done));
  page.compareRuns = null;
  results.forEach((result, index) => {
    const { card } = sides[index];
    card.dataset.state = result.status;
    $(".status", card).textContent = outcome(result);
  });
  redraw();
  setCompareBusy(false);
  refreshHealth();
}

// ---------------------------------------------------------------- set-up

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path} answered HTTP ${response.status}`);
  return response.json();
}

function showProfile() {
  const profile = page.profiles[$("#profile").value];
  if (!profile) return;
  $("#profile-description").textContent = profile.description || describeProfile(profile);
  $("#tps").placeholder = profile.tokens_per_second ? String(profile.tokens_per_second) : "unpaced";
  $("#ttft").placeholder = String(profile.ttft_ms);
  $("#jitter").placeholder = String(profile.jitter);
}

function fillSelect(select, names, selected) {
  select.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      option.selected = name === selected;
      return option;
    }),
  );
}

function selectTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    $(`#${tab.getAttribute("aria-controls")}`).hidden = !selected;
  }
}

function showTransportOptions() {
  $("#es-options").hidden = transport() !== "eventsource";
  $("#fetch-path").textContent = `POST ${dialect().path}`;
  // a dialect's own events are named by its API: no event name to choose
  $("#es-event").disabled = $("#es-format").value === "dialect";
}

async function init() {
  try {
    const [profiles, models, dialects] = await Promise.all([
      getJSON("/v1/profiles"),
      getJSON("/v1/models"),
      getJSON("/v1/dialects"),
    ]);
    page.profiles = profiles.profiles;
    page.defaultProfile = profiles.default;
    page.model = models.data[0]?.id ?? page.model;
    for (const entry of dialects.data) {
      if (entry.name in DIALECT_CLIENTS) page.dialects[entry.name] = entry;
    }
  } catch (error) {
    const banner = $("#banner");
    banner.textContent = `Cannot load the server's profiles, models and dialects: ${error.message}. Is tokenstream serve running?`;
    banner.hidden = false;
    return;
  }
  const dialectSelect = $("#dialect");
  dialectSelect.replaceChildren(
    ...Object.values(page.dialects).map(({ name, title }) => new Option(title, name)),
  );
  const names = Object.keys(page.profiles);
  fillSelect($("#profile"), names, page.defaultProfile);
  fillSelect($("#compare-a"), names, page.defaultProfile);
  const contrast = ["slow", "fast"].find((name) => name in page.profiles && name !== page.defaultProfile);
  fillSelect($("#compare-b"), names, contrast ?? names[names.length - 1]);
  showProfile();
  statsInto($("#chat-stats"));
  renderGapPlot($("#chat-plot"), []);
  for (const card of document.querySelectorAll(".result")) {
    statsInto($(".stats-slot", card));
    renderGapPlot($(".plot", card), []);
  }
  renderTimeline($("#compare-timeline"), []);

  $("#profile").addEventListener("change", showProfile);
  for (const control of [...document.querySelectorAll('input[name="transport"]'), dialectSelect, $("#es-format")]) {
    control.addEventListener("change", showTransportOptions);
  }
  showTransportOptions();
  connectFaultControls();
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => selectTab(tab.id.replace("tab-", "")));
  }

  const prompt = $("#prompt");
  $("#chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value;
    if (page.chatRun || !text.trim()) return;
    prompt.value = "";
    sendChat(text);
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  $("#stop").addEventListener("click", () => page.chatRun?.controller.abort());
  for (const button of document.querySelectorAll(".suggestions button")) {
    button.addEventListener("click", () => sendChat(button.dataset.prompt));
  }
  $("#compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runCompare();
  });
  $("#compare-stop").addEventListener("click", () => {
    for (const run of page.compareRuns ?? []) run.controller.abort();
  });

  refreshHealth();
  document.body.dataset.ready = "true";
}

init();
