// Data review: a run's generated, kept, rejected, train and eval rows, filtered and paged by the server.
import { api, el, errorBox, fmtNum } from "./core.js";

const KINDS = ["kept", "rejected", "generated", "train", "eval"];
const PAGE = 25;

function text(row, role) {
  const m = (row.messages || []).filter(x => x.role === role);
  return m.length ? m.map(x => x.content).join("\n") : role === "user" ? (row.input || "") : "";
}

function rowCard(row) {
  const meta = row.meta || {};
  const subs = Object.entries(meta.subscores || {});
  return el("article", { class: "row-card" },
    el("header", {},
      el("span", { class: "num muted" }, "#" + (row.row + 1)),
      el("code", {}, meta.id || "–"),
      el("span", { class: "badge origin" }, meta.origin || "–"),
      el("span", { class: "score num", title: "rubric score (0–5)" }, meta.score != null ? `score ${fmtNum(meta.score)}` : "unscored"),
      subs.length ? el("span", { class: "subs num" }, subs.map(([k, v]) => `${k} ${fmtNum(v)}`).join(" · ")) : "",
      el("span", { class: "muted" }, row.source)),
    el("div", { class: "io" },
      el("div", {}, el("h3", {}, "Input"), el("pre", {}, text(row, "user"))),
      el("div", {}, el("h3", {}, "Output"), el("pre", {}, text(row, "assistant") || "–"))),
    meta.rationale ? el("p", { class: "rationale" }, el("strong", {}, "Rationale: "), meta.rationale) : "",
    (meta.reasons || []).length ? el("ul", { class: "reasons" }, meta.reasons.map(r => el("li", {}, r))) : "");
}

export async function dataPage(main, { signal, params, navigate }) {
  main.append(el("h1", {}, "Data review"));
  let runs;
  try { runs = (await api("/v1/runs", { signal })).data; } catch (e) { main.append(errorBox(e)); return; }
  if (!runs.length) { main.append(el("p", { class: "muted" }, "No runs to review.")); return; }
  const runId = params[0] || runs[0].id;
  const url = new URL(location.href);
  const state = { kind: url.searchParams.get("kind") || "kept", origin: url.searchParams.get("origin") || "",
    reason: url.searchParams.get("reason") || "", min_score: url.searchParams.get("min_score") || "",
    q: url.searchParams.get("q") || "", offset: Number(url.searchParams.get("offset") || 0) };

  const runSel = el("select", { id: "f-run", onchange: () => navigate(`/ui/data/${encodeURIComponent(runSel.value)}`) },
    runs.map(r => el("option", { value: r.id, selected: r.id === runId }, r.id)));
  const kindBar = el("div", { class: "tabs", role: "group", "aria-label": "Kind of rows" });
  const origin = el("select", { id: "f-origin" });
  const reason = el("select", { id: "f-reason" });
  const minScore = el("input", { id: "f-min-score", type: "number", min: 0, max: 5, step: "any", value: state.min_score, inputmode: "decimal" });
  const q = el("input", { id: "f-q", type: "search", value: state.q, placeholder: "words in input, output, rationale…" });
  const status = el("p", { class: "muted num", id: "rows-status", role: "status", "aria-live": "polite" });
  const list = el("div", { class: "rows", id: "rows" });
  const prev = el("button", { type: "button", id: "prev-page" }, "← Previous");
  const next = el("button", { type: "button", id: "next-page" }, "Next →");

  const field = (id, label, input) => el("div", { class: "field" }, el("label", { for: id }, label), input);
  main.append(el("form", { class: "filters", role: "search", onsubmit: e => { e.preventDefault(); state.offset = 0; load(); } },
    field("f-run", "Run", runSel), field("f-origin", "Origin", origin), field("f-reason", "Reason", reason),
    field("f-min-score", "Min score", minScore), field("f-q", "Search", q),
    el("button", { type: "submit", class: "primary" }, "Apply")), kindBar, status, list, el("div", { class: "pager" }, prev, next));

  function renderKinds(counts) {
    kindBar.replaceChildren(...KINDS.map(k => el("button", { type: "button", class: "tab", "aria-pressed": String(k === state.kind),
      onclick: () => { state.kind = k; state.offset = 0; origin.value = ""; reason.value = ""; load(); } },
      k, " ", el("span", { class: "num muted" }, counts && counts[k] != null ? fmtNum(counts[k]) : ""))));
  }
  function options(select, facets, current, all) {
    const keys = Object.keys(facets);
    if (current && !keys.includes(current)) keys.push(current);
    select.replaceChildren(el("option", { value: "" }, all), ...keys.map(k =>
      el("option", { value: k, selected: k === current }, facets[k] != null ? `${k} (${facets[k]})` : k)));
  }
  let counts = null;
  try { counts = (await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal })).kinds; } catch (e) { /* the list still works */ }
  renderKinds(counts);

  let seq = 0, ready = false;
  async function load() {
    clearTimeout(typing);  // this load reads the search box itself: a pending debounced one would undo its page
    if (ready) { state.origin = origin.value; state.reason = reason.value; }  // before the first page: the URL's
    if (ready && q.value.trim() !== state.q) state.offset = 0;  // a new search starts at its first page
    state.min_score = minScore.value; state.q = q.value.trim();
    const p = new URLSearchParams({ kind: state.kind, offset: state.offset, limit: PAGE });
    for (const k of ["origin", "reason", "min_score", "q"]) if (state[k] !== "") p.set(k, state[k]);
    history.replaceState(null, "", `/ui/data/${encodeURIComponent(runId)}?${p}`);
    const mine = ++seq;
    status.textContent = "Loading…";
    try {
      const page = await api(`/v1/runs/${encodeURIComponent(runId)}/rows?${p}`, { signal });
      if (mine !== seq) return;
      renderKinds(counts);
      options(origin, page.facets.origin, state.origin, "any origin");
      options(reason, page.facets.reason, state.reason, "any reason");
      ready = true;
      list.replaceChildren(...(page.data.length ? page.data.map(rowCard) : [el("p", { class: "muted" }, "No rows match.")]));
      const end = page.offset + page.data.length;
      status.textContent = page.total ? `Rows ${fmtNum(page.offset + 1)}–${fmtNum(end)} of ${fmtNum(page.total)} ${state.kind}` : `0 ${state.kind} rows match`;
      prev.disabled = page.offset === 0;
      next.disabled = end >= page.total;
    } catch (e) { if (mine === seq) list.replaceChildren(errorBox(e)); }
  }
  prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); load(); });
  next.addEventListener("click", () => { state.offset += PAGE; load(); });
  origin.addEventListener("change", () => { state.offset = 0; load(); });
  reason.addEventListener("change", () => { state.offset = 0; load(); });
  let typing;
  q.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { state.offset = 0; load(); }, 300); });
  // first load: the select boxes are empty, so the state from the URL applies
  await load();
}
