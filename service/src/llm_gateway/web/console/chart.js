// A stacked bar chart in SVG: one bar per time bucket, one colour per series (provider or model).
// Two chart kinds would not justify a charting library's weight; each bar carries its numbers as
// data attributes and a <title>, so a reader (or a test) can check what it shows.

import { h } from "./lib.js";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = { left: 64, right: 8, top: 10, bottom: 28 };
const SERIES = 8; // colours; more series share them

/** `buckets` as UsageService returns them; `axis` the bucket starts (ms) the period spans, so a
 * quiet hour or day still has its place. */
export function stackedBars(buckets, label, axis = []) {
  if (!buckets.length) return h("p", { class: "muted" }, "No calls in this period.");
  const at = (bucket) => Date.parse(bucket.start_time);
  const starts = [...new Set([...axis, ...buckets.map(at)])].sort((a, b) => a - b);
  const series = [...new Set(buckets.map((b) => b.group?.[0] ?? ""))].sort();
  const cost = new Map(buckets.map((b) => [`${at(b)}|${b.group?.[0] ?? ""}`, parseFloat(b.stats?.cost || "0")]));
  const totals = starts.map((s) => series.reduce((sum, name) => sum + (cost.get(`${s}|${name}`) || 0), 0));
  const top = Math.max(...totals, 0) || 1;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const step = plotW / Math.max(starts.length, 1);
  const barW = Math.max(Math.min(step * 0.7, 40), 2);
  const svg = h("svg:svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, "data-testid": "cost-chart" });
  svg.append(h("svg:title", {}, label));
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - fraction);
    svg.append(h("svg:line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, stroke: "#d5dbe1" }));
    svg.append(h("svg:text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end" }, `$${(top * fraction).toPrecision(2)}`));
  }
  starts.forEach((start, i) => {
    let y = PAD.top + plotH;
    const x = PAD.left + step * i + (step - barW) / 2;
    series.forEach((name, s) => {
      const value = cost.get(`${start}|${name}`) || 0;
      if (!value) return;
      const height = (value / top) * plotH;
      y -= height;
      const rect = h("svg:rect", {
        x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(height, 0.5).toFixed(1),
        class: `s${s % SERIES}`,
        "data-start": new Date(start).toISOString(), "data-series": name, "data-cost": String(value),
      });
      rect.append(h("svg:title", {}, `${name || "(none)"} · ${new Date(start).toLocaleString()} · $${value}`));
      svg.append(rect);
    });
    if (starts.length <= 12 || i % Math.ceil(starts.length / 12) === 0) {
      const when = new Date(start);
      const text = starts.length > 1 && starts[1] - starts[0] < 86_400_000
        ? `${String(when.getHours()).padStart(2, "0")}:00`
        : when.toLocaleDateString(undefined, { month: "short", day: "numeric" });
      svg.append(h("svg:text", { x: (x + barW / 2).toFixed(1), y: HEIGHT - 8, "text-anchor": "middle" }, text));
    }
  });
  const legend = h("ul", { class: "legend", "aria-label": "Series" }, series.map((name, s) => h("li", {}, h("span", { class: `swatch s${s % SERIES}`, "aria-hidden": "true" }), name || "(none)")));
  return h("figure", {}, svg, legend);
}
