// A small SVG line chart: axes with ticks and units, a legend, one polyline (plus dots) per series.
// lineChart(host, {title, xLabel, yLabel, series: [{name, color, points: [[x, y], ...]}]}) draws into
// host and redraws when host changes width; call chart.update(series) with new points.
import { el } from "./core.js";

function niceStep(span, count) {
  const raw = span / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

function ticks(lo, hi, count, integer) {
  if (!(hi > lo)) { const pad = integer ? 1 : Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
  const step = integer ? Math.max(1, niceStep(hi - lo, count)) : niceStep(hi - lo, count);
  const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
  const out = [];
  for (let v = start; v <= end + step / 2; v += step) out.push(Number(v.toPrecision(12)));
  return { lo: start, hi: end, values: out };
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e5)) return v.toExponential(1);
  return Number(v.toPrecision(4)).toString();
}

const svg = (tag, attrs, ...kids) => el(tag, Object.assign({ _svg: true }, attrs), ...kids);

export function lineChart(host, opts) {
  const state = { series: opts.series || [] };
  const height = opts.height || 240;
  const figure = el("figure", { class: "chart" });
  const legend = el("figcaption", { class: "legend" });
  const box = el("div", { class: "chart-box", style: `height:${height}px` });
  figure.append(box, legend);
  host.append(figure);

  function draw() {
    const width = Math.max(260, box.clientWidth || 600);
    const m = { l: 56, r: 12, t: 10, b: 40 };
    const pts = state.series.flatMap(s => s.points);
    const node = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `${opts.title || "chart"}: ${opts.yLabel} by ${opts.xLabel}`, "data-points": pts.length });
    const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
    const xt = ticks(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1, Math.max(2, Math.floor(width / 90)), opts.integerX);
    const yt = ticks(ys.length ? Math.min(...ys) : 0, ys.length ? Math.max(...ys) : 1, 4);
    const X = v => m.l + (v - xt.lo) / (xt.hi - xt.lo || 1) * (width - m.l - m.r);
    const Y = v => height - m.b - (v - yt.lo) / (yt.hi - yt.lo || 1) * (height - m.t - m.b);
    for (const v of yt.values) {
      node.append(svg("line", { x1: m.l, x2: width - m.r, y1: Y(v), y2: Y(v), class: "grid" }),
        svg("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, label(v)));
    }
    for (const v of xt.values) {
      node.append(svg("line", { x1: X(v), x2: X(v), y1: height - m.b, y2: height - m.b + 4, class: "axis" }),
        svg("text", { x: X(v), y: height - m.b + 16, "text-anchor": "middle", class: "tick" }, label(v)));
    }
    node.append(svg("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: "axis" }),
      svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b, class: "axis" }),
      svg("text", { x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, opts.xLabel),
      svg("text", { x: 12, y: (m.t + height - m.b) / 2, transform: `rotate(-90 12 ${(m.t + height - m.b) / 2})`,
        "text-anchor": "middle", class: "axis-label" }, opts.yLabel));
    for (const s of state.series) {
      if (!s.points.length) continue;
      const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
      node.append(svg("polyline", { points: sorted.map(p => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none",
        stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || null }));
      for (const p of sorted) node.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: sorted.length > 60 ? 1.5 : 3,
        fill: s.color }, svg("title", {}, `${s.name}: ${label(p[1])} at ${opts.xLabel} ${label(p[0])}`)));
    }
    if (!pts.length) node.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "tick" },
      opts.empty || "no points yet"));
    box.replaceChildren(node);
    legend.replaceChildren(...state.series.map(s => el("span", { class: "key" },
      el("span", { class: "swatch", style: `background:${s.color}` }), `${s.name} `,
      el("span", { class: "num" }, s.points.length ? label(s.points[s.points.length - 1][1]) : "–"))));
  }

  let pending = false;
  const chart = {
    update(series) {
      if (series) state.series = series;
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; draw(); });
    },
    get points() { return state.series.reduce((n, s) => n + s.points.length, 0); },
  };
  new ResizeObserver(() => chart.update()).observe(box);
  draw();
  return chart;
}
