// New fine-tune (upload a JSONL, preview and check it, set hyperparameters, submit) and a job's live page,
// over OpenAI's files and fine-tuning jobs API (/v1/files, /v1/fine_tuning/jobs).
import { api, el, errorBox, badge, fmtNum, fmtTime, section, kv } from "./core.js";
import { lineChart } from "./chart.js";

const ROLES = new Set(["system", "developer", "user", "assistant"]);
const MAX_PROBLEMS = 20;

// Problems of a training file, in the browser: the format rows must have, line by line.
export function checkJsonl(text) {
  const rows = [], problems = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `line ${i + 1}`;
    let row;
    try { row = JSON.parse(line); } catch (e) { problems.push(`${where}: not valid JSON (${e.message})`); return; }
    if (typeof row !== "object" || row === null || Array.isArray(row)) { problems.push(`${where}: expected a JSON object`); return; }
    if (Array.isArray(row.messages)) {
      if (!row.messages.length) problems.push(`${where}: \`messages\` is empty`);
      row.messages.forEach((m, j) => {
        if (!m || !ROLES.has(m.role)) problems.push(`${where}: messages[${j}].role must be system, user or assistant`);
        else if (typeof m.content !== "string" || !m.content.trim()) problems.push(`${where}: messages[${j}].content must be non-empty text`);
      });
      const last = row.messages[row.messages.length - 1];
      if (last && last.role !== "assistant") problems.push(`${where}: the last message must be the assistant's answer`);
    } else if ("prompt" in row || "completion" in row) {
      if (typeof row.prompt !== "string" || typeof row.completion !== "string") problems.push(`${where}: \`prompt\` and \`completion\` must both be strings`);
    } else if ("instruction" in row) {
      if (typeof row.output !== "string") problems.push(`${where}: an alpaca row needs \`output\``);
    } else {
      problems.push(`${where}: no \`messages\` (OpenAI chat format), \`prompt\`/\`completion\` or \`instruction\`/\`output\``);
    }
    rows.push({ line: i + 1, row });
  });
  if (!rows.length) problems.push("the file has no rows");
  else if (rows.length < 10) problems.push(`only ${rows.length} rows: OpenAI's API asks for at least 10`);
  return { rows, problems };
}

function previewCells(row) {
  if (Array.isArray(row.messages)) {
    const get = r => row.messages.filter(m => m && m.role === r).map(m => m.content).join("\n");
    return [get("user"), get("assistant")];
  }
  if ("prompt" in row) return [row.prompt, row.completion];
  return [[row.instruction, row.input].filter(Boolean).join("\n"), row.output];
}

export async function newJobPage(main, { signal, navigate }) {
  main.append(el("h1", {}, "New fine-tune"));
  let models = [];
  try { models = (await api("/v1/models", { signal })).data; } catch (e) { main.append(errorBox(e)); }
  const file = el("input", { id: "j-file", type: "file", accept: ".jsonl,application/jsonl,application/x-ndjson" });
  const model = el("select", { id: "j-model" }, models.map(m => el("option", { value: m.id }, m.id + (m.parent ? "" : " (base)"))));
  const suffix = el("input", { id: "j-suffix", maxlength: 40, placeholder: "e.g. contacts" });
  const epochs = el("input", { id: "j-epochs", type: "number", min: 1, max: 50, placeholder: "auto" });
  const batch = el("input", { id: "j-batch", type: "number", min: 1, max: 256, placeholder: "auto" });
  const lr = el("input", { id: "j-lr", type: "number", min: 0.01, max: 10, step: "any", placeholder: "auto" });
  const preview = el("div", { id: "j-preview" });
  const problems = el("div", { id: "j-problems", role: "status", "aria-live": "polite" });
  const submit = el("button", { type: "submit", class: "primary", id: "j-submit", disabled: true }, "Start fine-tune");
  const err = el("div", { role: "alert" });
  const field = (input, label, help) => el("div", { class: "field" }, el("label", { for: input.id }, label), input,
    help ? el("small", { class: "muted" }, help) : "");
  let checked = null;

  file.addEventListener("change", async () => {
    const f = file.files[0];
    checked = null; submit.disabled = true; preview.replaceChildren(); problems.replaceChildren();
    if (!f) return;
    checked = checkJsonl(await f.text());
    const blocking = checked.problems.filter(p => !p.startsWith("only "));
    problems.replaceChildren(checked.problems.length
      ? el("div", { class: blocking.length ? "error" : "warn" }, el("strong", {}, `${checked.problems.length} problem(s)`),
        el("ul", {}, checked.problems.slice(0, MAX_PROBLEMS).map(p => el("li", {}, p))))
      : el("p", { class: "ok" }, `${checked.rows.length} rows, no problems found.`));
    preview.replaceChildren(el("table", { class: "list" },
      el("caption", {}, `First ${Math.min(5, checked.rows.length)} of ${checked.rows.length} rows`),
      el("thead", {}, el("tr", {}, el("th", {}, "Line"), el("th", {}, "Input"), el("th", {}, "Answer"))),
      el("tbody", {}, checked.rows.slice(0, 5).map(({ line, row }) => el("tr", {}, el("td", { class: "num" }, line),
        ...previewCells(row).map(c => el("td", {}, el("pre", {}, String(c ?? "")))))))));
    submit.disabled = blocking.length > 0;
  });

  const form = el("form", { class: "newjob" },
    section("Training file", field(file, "JSONL file", "OpenAI chat rows ({\"messages\": [...]}), prompt/completion or alpaca"),
      problems, preview),
    section("Model and hyperparameters", field(model, "Base model"), field(suffix, "Suffix", "part of the fine-tuned model's name"),
      el("div", { class: "params" }, field(epochs, "Epochs"), field(batch, "Batch size"), field(lr, "Learning-rate multiplier"))),
    el("div", { class: "row" }, submit), err);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    if (!checked || !file.files[0]) return;
    submit.disabled = true; err.replaceChildren(el("p", { class: "muted" }, "Uploading…"));
    try {
      const body = new FormData();
      body.append("purpose", "fine-tune");
      body.append("file", file.files[0]);
      const uploaded = await api("/v1/files", { method: "POST", body });
      const hyper = {};
      if (epochs.value) hyper.n_epochs = Number(epochs.value);
      if (batch.value) hyper.batch_size = Number(batch.value);
      if (lr.value) hyper.learning_rate_multiplier = Number(lr.value);
      const req = { model: model.value, training_file: uploaded.id };
      if (suffix.value.trim()) req.suffix = suffix.value.trim();
      if (Object.keys(hyper).length) req.hyperparameters = hyper;
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: req });
      navigate(`/ui/jobs/${encodeURIComponent(job.id)}`);
    } catch (e) { err.replaceChildren(errorBox(e)); submit.disabled = false; }
  });
  main.append(form);
}

const DONE = new Set(["succeeded", "failed", "cancelled"]);

export async function jobPage(main, { signal, params }) {
  const id = params[0];
  const status = el("span", { id: "job-status" });
  main.append(el("div", { class: "page-head" }, el("h1", {}, "Job ", el("code", {}, id)), status));
  const info = el("div");
  const chartHost = el("div");
  const counts = el("p", { class: "muted num", id: "curve-count" });
  const log = el("ul", { class: "log" });
  main.append(section("Job", info), section("Loss", chartHost, counts), section("Events", log));
  const chart = lineChart(chartHost, { title: "loss", xLabel: "step", yLabel: "loss (nats/token)", empty: "no training steps yet", integerX: true, series: [] });
  const events = new Map();

  async function poll() {
    const job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`, { signal });
    status.replaceChildren(badge(job.status));
    const hp = job.hyperparameters || (job.method && job.method.supervised && job.method.supervised.hyperparameters) || {};
    info.replaceChildren(kv({ model: job.model, "fine-tuned model": job.fine_tuned_model || "–", "training file": job.training_file,
      created: fmtTime(job.created_at), finished: fmtTime(job.finished_at), "trained tokens": fmtNum(job.trained_tokens),
      hyperparameters: JSON.stringify(hp), error: job.error && job.error.message ? job.error.message : "–" }));
    if (job.fine_tuned_model) info.append(el("p", {}, el("a", { href: `/ui/playground?model=${encodeURIComponent(job.model)}&model=${encodeURIComponent(job.fine_tuned_model)}` },
      "Compare it with its base in the playground")));
    // OpenAI lists events newest first and `after` pages to older ones: read from the newest back to
    // the first event already seen
    let cursor = null;
    for (;;) {
      const q = new URLSearchParams({ limit: 100 });
      if (cursor) q.set("after", cursor);
      const page = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events?${q}`, { signal });
      const fresh = page.data.filter(e => !events.has(e.id));
      fresh.forEach(e => events.set(e.id, e));
      if (fresh.length < page.data.length || !page.has_more || !page.data.length) break;
      cursor = page.data[page.data.length - 1].id;
    }
    const all = [...events.values()].sort((a, b) => a.created_at - b.created_at || String(a.id).localeCompare(String(b.id)));
    const metric = all.filter(e => e.type === "metrics" && e.data);
    // a validation event repeats the last train metrics: train points come from training events only
    const train = metric.filter(e => e.data.valid_loss === undefined && e.data.full_valid_loss === undefined);
    const pts = (k, from = metric) => from.filter(e => typeof e.data[k] === "number").map(e => [e.data.step, e.data[k]]);
    chart.update([{ name: "train loss", color: "var(--c1)", points: pts("train_loss", train) },
      { name: "eval loss", color: "var(--c2)", points: pts("valid_loss").concat(pts("full_valid_loss")), dash: "5 3" }]);
    counts.textContent = `${pts("train_loss", train).length} train points · ${all.length} events`;
    log.replaceChildren(...all.slice(-15).reverse().map(e => el("li", { class: e.level },
      el("span", { class: "num muted" }, fmtTime(e.created_at)), " ", e.message)));
    return job;
  }
  for (;;) {
    try { const job = await poll(); if (DONE.has(job.status)) break; }
    catch (e) { if (signal.aborted) return; info.replaceChildren(errorBox(e)); if (e.status === 404) return; }
    await new Promise(r => setTimeout(r, 1000));
    if (signal.aborted) return;
  }
}
