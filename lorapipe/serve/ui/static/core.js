// Shared helpers: the API key, calls to the HTTP API, SSE over fetch, DOM building, formatting.
const KEY = "lorapipe.key";

export function getKey() { return sessionStorage.getItem(KEY) || ""; }
export function setKey(k) { if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const k = getKey();
  if (k) h["Authorization"] = "Bearer " + k;
  return h;
}

async function failure(res) {
  let msg = res.status + " " + res.statusText, code = null;
  try { const body = await res.json(); msg = (body.error && body.error.message) || msg; code = body.error && body.error.code; }
  catch (e) { /* not JSON */ }
  if (res.status === 401) document.dispatchEvent(new CustomEvent("lorapipe:auth", { detail: msg }));
  return new ApiError(res.status, msg, code);
}

// JSON in, JSON out; a non-2xx answer throws ApiError with the server's message.
export async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: headers(opts.headers), signal: opts.signal };
  if (opts.json !== undefined) { init.body = JSON.stringify(opts.json); init.headers["Content-Type"] = "application/json"; }
  else if (opts.body !== undefined) init.body = opts.body;
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

// Server-sent events over fetch (EventSource cannot send the Authorization header). Calls
// onEvent({id, event, data}) per event; resolves when the stream ends; throws on HTTP errors.
export async function sse(path, { method = "GET", json, lastId, onEvent, signal } = {}) {
  const h = headers(json !== undefined ? { "Content-Type": "application/json" } : {});
  h["Accept"] = "text/event-stream";
  if (lastId) h["Last-Event-ID"] = String(lastId);
  const res = await fetch(path, { method, headers: h, signal, body: json !== undefined ? JSON.stringify(json) : undefined });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const ev = { id: null, event: "message", data: "" };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":"), field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "data") data.push(val); else if (field === "id") ev.id = val; else if (field === "event") ev.event = val;
      }
      if (!data.length) continue;
      ev.data = data.join("\n");
      onEvent(ev);
    }
  }
}

// el("div", {class: "x", onclick: fn}, "text", child...) -> Element
export function el(tag, attrs, ...children) {
  const node = tag === "svg" || attrs && attrs._svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "_svg" || v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined || x === "") return "–";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(digits)).toString();
}
export function fmtSec(s) {
  if (s === null || s === undefined) return "–";
  return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
}
export function fmtTime(ts) {
  if (!ts) return "–";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
export function badge(status) { return el("span", { class: "badge " + String(status).replace(/[^a-z_]/g, "") }, status); }

export function errorBox(e) {
  return el("p", { class: "error", role: "alert" }, e && e.message ? e.message : String(e));
}

// A modal confirmation; resolves true only when the user confirms.
export function confirmDialog(text, okLabel = "Confirm") {
  const dlg = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise(resolve => dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true }));
}

export function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

export function kv(obj) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of Object.entries(obj)) dl.append(el("dt", {}, k), el("dd", {}, v));
  return dl;
}
