// Registry: adapters, versions with metrics and lineage, diff of two versions, promote/rollback, what is served.
import { api, el, errorBox, fmtNum, fmtTime, confirmDialog, section } from "./core.js";

function changesTable(rows, cols) {
  if (!rows || !rows.length) return el("p", { class: "muted" }, "no change");
  return el("table", { class: "list" }, el("thead", {}, el("tr", {}, cols.map(c => el("th", {}, c)))),
    el("tbody", {}, rows.map(r => el("tr", {}, cols.map(c => el("td", { class: typeof r[c] === "number" ? "num" : "" },
      typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : fmtNum(r[c])))))));
}

export async function registryPage(main, { signal, params, navigate }) {
  main.append(el("h1", {}, "Registry"));
  let adapters;
  try { adapters = await api("/v1/registry", { signal }); } catch (e) { main.append(errorBox(e)); return; }
  if (!adapters.data.length) { main.append(el("p", { class: "muted" }, `No adapters in ${adapters.registry} yet.`)); return; }
  const name = params[0] || adapters.data[0].name;
  main.append(el("nav", { class: "tabs", "aria-label": "Adapters" }, adapters.data.map(a =>
    el("a", { href: `/ui/registry/${encodeURIComponent(a.name)}`, class: "tab", "aria-current": a.name === name ? "page" : null },
      a.name, " ", el("span", { class: "num muted" }, `${a.versions} versions`)))));
  const served = el("div", { id: "served" });
  const versions = el("div");
  const diffBox = el("div", { id: "diff" });
  const notice = el("p", { role: "status", "aria-live": "polite", class: "muted", id: "registry-notice" });
  main.append(section("Served now", served, notice), section("Versions", versions), section("Diff two versions", diffBox));

  let info = null;
  async function refresh() {
    try {
      const [detail, models] = await Promise.all([api(`/v1/registry/${encodeURIComponent(name)}`, { signal }),
        api("/v1/models", { signal }).catch(() => ({ data: [] }))]);
      const loaded = Object.fromEntries(models.data.map(m => [m.id, m.version]));
      const first = info === null;
      info = detail;
      served.replaceChildren(el("table", { class: "list" },
        el("thead", {}, el("tr", {}, el("th", {}, "Model name"), el("th", {}, "Points at"), el("th", {}, "Loaded in the server"))),
        el("tbody", {}, [[name, detail.aliases.prod || `v${detail.versions[detail.versions.length - 1].version}`],
          ...Object.entries(detail.aliases).map(([a, v]) => [`${name}@${a}`, v])].map(([model, v]) =>
          el("tr", { "data-model": model }, el("td", {}, el("code", {}, model)), el("td", { class: "num alias-target" }, v),
            el("td", { class: "num" }, loaded[model] || "not loaded yet"))))));
      if (first) renderVersions();
      else updateAliases();
    } catch (e) { served.replaceChildren(errorBox(e)); }
  }

  function updateAliases() {
    for (const v of info.versions) {
      const cell = versions.querySelector(`[data-version="${v.version}"] .aliases`);
      if (cell) cell.textContent = v.aliases.join(", ") || "–";
    }
  }

  function renderVersions() {
    const metricKeys = [...new Set(info.versions.flatMap(v => Object.keys(v.metrics || {})))].slice(0, 4);
    const alias = el("input", { id: "alias-name", value: "prod", size: 10, "aria-describedby": "alias-help" });
    versions.replaceChildren(
      el("div", { class: "field inline" }, el("label", { for: "alias-name" }, "Alias to move"), alias,
        el("span", { id: "alias-help", class: "muted" }, "prod is what a plain name serves")),
      el("table", { class: "list stack" },
        el("thead", {}, el("tr", {}, ["Version", "Created", "Message", "Parent", "Aliases", ...metricKeys.map(k => k.split(".").pop()), ""]
          .map(h => el("th", {}, h)))),
        el("tbody", {}, [...info.versions].reverse().map(v => el("tr", { "data-version": v.version },
          el("td", {}, el("code", {}, v.ref)), el("td", { class: "num", "data-label": "created" }, fmtTime(v.created)),
          el("td", { "data-label": "message" }, v.message || "–"), el("td", { "data-label": "parent" }, v.parent || "–"),
          el("td", { class: "aliases", "data-label": "aliases" }, v.aliases.join(", ") || "–"),
          ...metricKeys.map(k => el("td", { class: "num", "data-label": k.split(".").pop() }, fmtNum((v.metrics || {})[k]))),
          el("td", {}, el("button", { type: "button", class: "promote", "aria-label": `Promote ${v.ref}`,
            onclick: () => move("promote", v.version, alias.value.trim()) }, "Promote")))))),
      el("div", { class: "row" }, el("button", { type: "button", id: "rollback",
        onclick: () => move("rollback", null, alias.value.trim()) }, "Roll back alias")));
    const opts = sel => info.versions.map(v => el("option", { value: `v${v.version}`, selected: sel === v.version }, v.ref));
    const n = info.versions.length;
    const a = el("select", { id: "diff-a" }, opts(info.versions[Math.max(0, n - 2)].version));
    const b = el("select", { id: "diff-b" }, opts(info.versions[n - 1].version));
    const out = el("div", { id: "diff-out" });
    diffBox.replaceChildren(el("form", { class: "row", onsubmit: async e => {
      e.preventDefault();
      try { showDiff(out, await api(`/v1/registry/${encodeURIComponent(name)}/diff?a=${a.value}&b=${b.value}`, { signal })); }
      catch (err) { out.replaceChildren(errorBox(err)); }
    } }, el("label", { for: "diff-a" }, "From"), a, el("label", { for: "diff-b" }, "to"), b,
      el("button", { type: "submit", class: "primary" }, "Diff")), out);
  }

  async function move(action, version, alias) {
    const text = action === "promote" ? `Point ${name}@${alias} at ${name}@v${version}? Requests for ${name}@${alias}` +
      (alias === "prod" ? ` and ${name}` : "") + " will be served by it once the server reloads it."
      : `Move ${name}@${alias} back to the version it pointed at before its last promote?`;
    if (!await confirmDialog(text, action === "promote" ? "Promote" : "Roll back")) return;
    try {
      const r = await api(`/v1/registry/${encodeURIComponent(name)}/${action}`, { method: "POST",
        json: action === "promote" ? { version, alias } : { alias } });
      await refresh();
      notice.textContent = r.changed ? `${name}@${alias}: v${r.previous ?? "–"} → v${r.target}` : `${name}@${alias} already points at v${r.target}`;
    } catch (e) { notice.replaceChildren(errorBox(e)); }
  }

  function showDiff(out, d) {
    out.replaceChildren(el("p", {}, d.same_content ? "Same adapter content." : "Different adapter content."),
      el("h3", {}, "Metrics"), changesTable(d.metrics, ["key", "old", "new", "delta"]),
      el("h3", {}, "Config"), changesTable(d.config, ["key", "old", "new"]),
      el("h3", {}, "Data"), changesTable(d.data, ["file", "old_rows", "new_rows"]),
      d.check_set_drops && d.check_set_drops.length ? [el("h3", {}, "Check-set drops"), changesTable(d.check_set_drops, ["set", "metric", "old", "new"])] : "",
      el("h3", {}, "Files"), el("p", {}, `added ${d.files.added.length}, removed ${d.files.removed.length}, changed ${d.files.changed.length}`));
  }

  await refresh();
  const timer = setInterval(refresh, 2000);  // aliases moved elsewhere (CLI, another tab) show up too
  signal.addEventListener("abort", () => clearInterval(timer));
}
