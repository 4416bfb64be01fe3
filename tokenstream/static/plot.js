// Inline SVG charts, drawn from measurements:
// - renderGapPlot: one bar per gap between text events, with a dashed line at the gap the
//   profile aims for. Shows the rhythm: jitter, pauses at sentence ends, bursts.
// - renderTimeline: tokens received over time, one line per stream on shared axes. Shows
//   time to first token (where a line starts), tokens/s (its slope) and bursts (steps).
//
// Both draw in CSS pixels (viewBox = the element's size) so labels keep their size at any
// width, and redraw themselves when the element is resized.

const SVG = "http://www.w3.org/2000/svg";
const FALLBACK_WIDTH = 320; // while the chart is hidden and has no size
const LEFT = 46;
const RIGHT = 6;
const TOP = 8;
const BOTTOM = 20;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round axis maximum at or above `value` (1, 2, 5 x 10^n). */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s` : `${Math.round(ms)} ms`;
}

const lastDrawn = new WeakMap();
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) lastDrawn.get(entry.target)?.();
});

/** Runs `draw(frame)` now and again whenever `svg` changes size. */
function drawInto(svg, draw) {
  const redraw = () => {
    const width = Math.round(svg.getBoundingClientRect().width) || FALLBACK_WIDTH;
    const height = Math.round(svg.getBoundingClientRect().height) || 130;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    draw({
      width,
      height,
      left: LEFT,
      right: width - RIGHT,
      top: TOP,
      bottom: height - BOTTOM,
    });
  };
  if (!lastDrawn.has(svg)) resized.observe(svg);
  lastDrawn.set(svg, redraw);
  redraw();
}

function axes(svg, frame, yLabel) {
  svg.append(
    el("line", { class: "axis", x1: frame.left, y1: frame.top, x2: frame.left, y2: frame.bottom }),
    el("line", { class: "axis", x1: frame.left, y1: frame.bottom, x2: frame.right,
                 y2: frame.bottom }),
    el("text", { class: "label", x: frame.left - 4, y: frame.top + 4, "text-anchor": "end" },
       yLabel),
    el("text", { class: "label", x: frame.left - 4, y: frame.bottom, "text-anchor": "end" }, "0"),
  );
}

function emptyNote(svg, frame, text) {
  svg.append(el("text", { class: "label empty", x: (frame.left + frame.right) / 2,
                          y: (frame.top + frame.bottom) / 2, "text-anchor": "middle" }, text));
}

/** Bars of `gapsMs`; option `targetMs` draws the dashed target line. */
export function renderGapPlot(svg, gapsMs, { targetMs = null } = {}) {
  drawInto(svg, (frame) => {
    const top = niceCeiling(Math.max(targetMs ?? 0, ...gapsMs, 1));
    const plotHeight = frame.bottom - frame.top;
    const y = (ms) => frame.top + plotHeight * (1 - Math.min(ms, top) / top);
    axes(svg, frame, formatMs(top));
    if (gapsMs.length === 0) {
      emptyNote(svg, frame, "gaps between tokens appear here");
      return;
    }
    const slot = (frame.right - frame.left) / gapsMs.length;
    const barWidth = Math.max(slot * 0.75, 0.6);
    const bars = el("g", { class: "bars" });
    gapsMs.forEach((gap, index) => {
      const barTop = y(gap);
      const bar = el("rect", {
        x: (frame.left + index * slot + (slot - barWidth) / 2).toFixed(2),
        y: barTop.toFixed(2),
        width: barWidth.toFixed(2),
        height: Math.max(frame.bottom - barTop, 0.5).toFixed(2),
      });
      bar.append(el("title", {}, `gap ${index + 1}: ${gap.toFixed(1)} ms`));
      bars.append(bar);
    });
    svg.append(bars);
    svg.append(el("text", { class: "label", x: frame.right, y: frame.height - 4,
                            "text-anchor": "end" }, `${gapsMs.length} gaps between events`));
    if (targetMs !== null && targetMs > 0) {
      const ty = y(targetMs);
      svg.append(
        el("line", { class: "target", x1: frame.left, y1: ty, x2: frame.right, y2: ty }),
        // the legend sits under the axis, so the label never covers a bar
        el("line", { class: "target", x1: frame.left, y1: frame.height - 7, x2: frame.left + 18,
                     y2: frame.height - 7 }),
        el("text", { class: "label target-label", x: frame.left + 22, y: frame.height - 4 },
           `target ${formatMs(targetMs)}`),
      );
    }
  });
}

/**
 * Lines of tokens received over time. `series`: [{label, className, points: [[ms, tokens]]}]
 * where `ms` counts from the moment the request was sent.
 */
export function renderTimeline(svg, series) {
  drawInto(svg, (frame) => {
    const points = series.flatMap((line) => line.points);
    const maxMs = niceCeiling(Math.max(1, ...points.map(([ms]) => ms)));
    const maxTokens = niceCeiling(Math.max(1, ...points.map(([, tokens]) => tokens)));
    const x = (ms) => frame.left + ((frame.right - frame.left) * ms) / maxMs;
    const y = (tokens) => frame.bottom - ((frame.bottom - frame.top) * tokens) / maxTokens;
    axes(svg, frame, `${maxTokens} tok`);
    svg.append(el("text", { class: "label", x: frame.right, y: frame.height - 4,
                            "text-anchor": "end" }, formatMs(maxMs)));
    if (points.length === 0) {
      emptyNote(svg, frame, "tokens received over time appear here");
      return;
    }
    let legendX = frame.left;
    for (const line of series) {
      // a step line: flat while waiting, up by an event's tokens when it arrives
      let path = `M${x(0).toFixed(1)},${y(0).toFixed(1)}`;
      for (const [ms, tokens] of line.points) {
        path += ` H${x(ms).toFixed(1)} V${y(tokens).toFixed(1)}`;
      }
      svg.append(el("path", { class: `series ${line.className}`, d: path }));
      const legend = el("text", { class: `label legend ${line.className}`, x: legendX,
                                  y: frame.height - 4 }, line.label);
      svg.append(legend);
      legendX += 12 + 6.2 * line.label.length;
    }
  });
}
