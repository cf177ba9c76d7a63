// Runs & jobs: the list of run folders and fine-tuning jobs; a run's live page (SSE from events.jsonl).
import { api, sse, el, badge, fmtSec, fmtTime, fmtNum, errorBox, section, kv } from "./core.js";
import { lineChart } from "./chart.js";

const STAGE_ORDER = ["probe", "generate", "score", "augment", "split", "train", "evaluate"];

function stageChips(stages) {
  return el("ol", { class: "chips", "aria-label": "stages" }, stages.map(s =>
    el("li", { class: "chip " + s.status, title: `${s.name}: ${s.status}` },
      el("span", {}, s.name), el("span", { class: "num" }, s.seconds != null ? fmtSec(s.seconds) : s.status))));
}

export async function runsPage(main, { signal }) {
  const runsBox = el("div", {}, el("p", { class: "muted" }, "Loading runs…"));
  const jobsBox = el("div", {}, el("p", { class: "muted" }, "Loading jobs…"));
  main.append(el("h1", {}, "Runs & jobs"), section("Pipeline runs", runsBox), section("Fine-tuning jobs", jobsBox));
  async function load() {
    try {
      const runs = (await api("/v1/runs", { signal })).data;
      runsBox.replaceChildren(runs.length ? el("table", { class: "list stack" },
        el("thead", {}, el("tr", {}, el("th", {}, "Run"), el("th", {}, "Status"), el("th", {}, "Stages"), el("th", {}, "Updated"))),
        el("tbody", {}, runs.map(r => el("tr", {},
          el("td", {}, el("a", { href: `/ui/runs/${encodeURIComponent(r.id)}` }, r.id)),
          el("td", {}, badge(r.status)), el("td", {}, stageChips(r.stages)),
          el("td", { class: "num", "data-label": "updated" }, fmtTime(r.updated))))))
        : el("p", { class: "muted" }, "No run folders here yet. Start the server with --runs DIR."));
    } catch (e) { runsBox.replaceChildren(errorBox(e)); }
    try {
      const jobs = (await api("/v1/fine_tuning/jobs?limit=50", { signal })).data;
      jobsBox.replaceChildren(jobs.length ? el("table", { class: "list stack" },
        el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "Status"), el("th", {}, "Model"), el("th", {}, "Created"))),
        el("tbody", {}, jobs.map(j => el("tr", {},
          el("td", {}, el("a", { href: `/ui/jobs/${encodeURIComponent(j.id)}` }, j.id)), el("td", {}, badge(j.status)),
          el("td", {}, j.fine_tuned_model || j.model), el("td", { class: "num" }, fmtTime(j.created_at))))))
        : el("p", { class: "muted" }, "No fine-tuning jobs yet. ", el("a", { href: "/ui/new" }, "Start one"), "."));
    } catch (e) {
      jobsBox.replaceChildren(e.status === 404 ? el("p", { class: "muted" }, "This server has no fine-tuning jobs API.")
        : errorBox(e));
    }
  }
  await load();
  const timer = setInterval(load, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));
}

// Curves and progress fed by events; kept per run in sessionStorage so a reload resumes after the last seq.
class RunView {
  constructor(runId) {
    this.key = "lorapipe.events." + runId;
    this.train = []; this.evalPts = []; this.lastSeq = 0; this.stages = {}; this.progress = null; this.log = [];
  }
  restore(serverLastSeq) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(this.key) || "null");
      if (saved && saved.lastSeq <= serverLastSeq) Object.assign(this, saved);  // else the folder was replaced
    } catch (e) { sessionStorage.removeItem(this.key); }
  }
  save() {
    const { train, evalPts, lastSeq, stages, log } = this;
    try { sessionStorage.setItem(this.key, JSON.stringify({ train, evalPts, lastSeq, stages, log: log.slice(-50) })); }
    catch (e) { /* full: the page still works, a reload replays from the start */ }
  }
  apply(e) {
    this.lastSeq = Math.max(this.lastSeq, e.seq || 0);
    const t = e.type;
    if (t === "run_started") { this.train = []; this.evalPts = []; this.stages = {}; (e.stages || []).forEach(s => this.stages[s] = { status: "pending" }); }
    if (t === "train_metrics" && typeof e.loss === "number") this.train.push([e.step, e.loss]);
    if (t === "eval_metrics" && typeof e.eval_loss === "number") this.evalPts.push([e.step, e.eval_loss]);
    if (t && t.startsWith("stage_")) {
      const status = { stage_started: "running", stage_skipped: "skipped", stage_finished: "ran", stage_failed: "failed" }[t];
      this.stages[e.stage] = { status, seconds: e.seconds ?? null };
    }
    if (t === "progress") this.progress = e;
    if (t === "stage_finished" || t === "run_finished" || t === "run_failed") this.progress = null;
    if (["message", "warning", "stage_failed", "run_failed", "run_finished"].includes(t))
      this.log.push({ seq: e.seq, ts: e.ts, type: t, text: e.text || e.error || (t === "run_finished" ? "run finished" : "") });
  }
}

export async function runPage(main, { signal, params }) {
  const runId = params[0];
  const head = el("div", { class: "page-head" }, el("h1", {}, "Run ", el("code", {}, runId)));
  main.append(head);
  let run;
  try { run = await api(`/v1/runs/${encodeURIComponent(runId)}`, { signal }); }
  catch (e) { main.append(errorBox(e)); return; }
  const view = new RunView(runId);
  view.restore(run.last_seq || 0);
  const status = el("span", { id: "run-status" }, badge(run.status));
  head.append(status, el("a", { href: `/ui/data/${encodeURIComponent(runId)}`, class: "button" }, "Review data"));

  const progress = el("div", { class: "progress", role: "status", "aria-live": "polite" });
  const stagesBox = el("div");
  const chartHost = el("div");
  const counts = el("p", { class: "muted num", id: "curve-count" });
  const log = el("ul", { class: "log" });
  main.append(section("Stages", progress, stagesBox), section("Loss", chartHost, counts));
  const chart = lineChart(chartHost, { title: "loss", xLabel: "step", yLabel: "loss (nats/token)",
    empty: "no training steps yet", integerX: true, series: [] });

  function render() {
    const stages = STAGE_ORDER.filter(s => view.stages[s] || run.stages.some(x => x.name === s)).map(s => {
      const fromServer = run.stages.find(x => x.name === s) || {};
      const live = view.stages[s] || {};
      return { name: s, status: live.status || fromServer.status, seconds: live.seconds ?? fromServer.seconds };
    });
    stagesBox.replaceChildren(stageChips(stages));
    const p = view.progress;
    progress.replaceChildren(p ? el("div", {},
      el("span", {}, p.phase || p.stage), " ",
      el("span", { class: "num" }, p.total ? `${p.n}/${p.total}` : String(p.n)),
      el("progress", { max: p.total || 1, value: p.total ? p.n : 0, "aria-label": p.phase || "progress" })) : "");
    chart.update([{ name: "train loss", color: "var(--c1)", points: view.train },
      { name: "eval loss", color: "var(--c2)", points: view.evalPts, dash: "5 3" }]);
    counts.textContent = `${view.train.length} train points, ${view.evalPts.length} eval points · events up to #${view.lastSeq}`;
    log.replaceChildren(...view.log.slice(-12).reverse().map(x => el("li", { class: x.type },
      el("span", { class: "num muted" }, fmtTime(x.ts)), " ", x.text)));
  }
  render();

  // the stream: resume after the last seq this tab has seen; reconnect (with Last-Event-ID) when it drops
  (async () => {
    while (!signal.aborted) {
      try {
        await sse(`/v1/runs/${encodeURIComponent(runId)}/events`, { lastId: view.lastSeq, signal, onEvent: ev => {
          if (!ev.id) return;
          const e = JSON.parse(ev.data);
          view.apply(e);
          if (e.type === "run_started") status.replaceChildren(badge("running"));
          if (e.type === "run_finished" || e.type === "run_failed") status.replaceChildren(badge(e.type === "run_finished" ? "finished" : "failed"));
          render(); view.save();
        } });
      } catch (e) { if (signal.aborted) return; }
      await new Promise(r => setTimeout(r, 2000));
    }
  })();

  main.append(section("Messages", log));
  if (run.ab) {
    const arms = run.ab.arms || {};
    const names = Object.keys(arms);
    const metrics = ["exact_match", "mean_score", "compliance", "eval_loss", "perplexity", "mean_output_tokens"];
    main.append(section("A/B evaluation",
      el("p", { class: "verdict" }, (run.ab.verdict && run.ab.verdict.line) || ""),
      el("table", { class: "list" }, el("thead", {}, el("tr", {}, el("th", {}, "metric"), names.map(n => el("th", { class: "num" }, arms[n].label || n)))),
        el("tbody", {}, metrics.filter(m => names.some(n => arms[n][m] !== undefined)).map(m => el("tr", {},
          el("td", {}, m), names.map(n => el("td", { class: "num" }, fmtNum(arms[n][m])))))))));
  }
  if (run.report) {
    // no scripts run in it; same-origin only so the browser renders it in-process (screenshots, printing)
    const frame = el("iframe", { class: "report", title: "A/B report", sandbox: "allow-same-origin" });
    main.append(section("Report", frame));
    api(`/v1/runs/${encodeURIComponent(runId)}/report`, { signal }).then(html => { frame.srcdoc = html; }).catch(() => {});
  }
  if (run.data_card && run.data_card.markdown) main.append(section("Data card", el("pre", { class: "md" }, run.data_card.markdown)));
  const metrics = run.metrics || {};
  if (Object.keys(metrics).length) main.append(section("Stage metrics", ...Object.entries(metrics).filter(([, m]) => m).map(([s, m]) =>
    el("details", {}, el("summary", {}, s), kv(Object.fromEntries(Object.entries(m).filter(([, v]) => typeof v !== "object")
      .map(([k, v]) => [k, fmtNum(v)])))))));
  if (run.config) main.append(section("Config", el("details", {}, el("summary", {}, "config.json (resolved)"),
    el("pre", {}, JSON.stringify(run.config, null, 2)))));
}
