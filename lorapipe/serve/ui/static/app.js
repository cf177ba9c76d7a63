// The router: a path under /ui/ picks a page; links inside the app navigate without a reload.
import { api, getKey, setKey, el, errorBox } from "./core.js";
import { runsPage, runPage } from "./runs.js";
import { dataPage } from "./data.js";
import { playgroundPage } from "./playground.js";
import { registryPage } from "./registry.js";
import { newJobPage, jobPage } from "./jobs.js";

const ROUTES = [
  [/^\/ui\/?(?:runs)?\/?$/, runsPage, "runs", "Runs & jobs"],
  [/^\/ui\/runs\/([^/]+)$/, runPage, "runs", "Run"],
  [/^\/ui\/jobs\/([^/]+)$/, jobPage, "runs", "Job"],
  [/^\/ui\/data(?:\/([^/]+))?\/?$/, dataPage, "data", "Data review"],
  [/^\/ui\/playground\/?$/, playgroundPage, "playground", "Playground"],
  [/^\/ui\/registry(?:\/([^/]+))?\/?$/, registryPage, "registry", "Registry"],
  [/^\/ui\/new\/?$/, newJobPage, "new", "New fine-tune"],
];

const main = document.getElementById("main");
let current = null;

async function render() {
  if (current) current.abort();
  current = new AbortController();
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path));
  main.replaceChildren();
  for (const a of document.querySelectorAll("[data-nav]")) a.removeAttribute("aria-current");
  if (!route) { main.append(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "/ui/runs" }, "Go to the runs"))); return; }
  const [re, page, nav, title] = route;
  const link = document.querySelector(`[data-nav="${nav}"]`);
  if (link) link.setAttribute("aria-current", "page");
  document.title = `${title} · lorapipe`;
  const params = (path.match(re) || []).slice(1).filter(Boolean).map(decodeURIComponent);
  try { await page(main, { signal: current.signal, params, navigate }); }
  catch (e) { if (!current.signal.aborted) main.append(errorBox(e)); }
}

export function navigate(href) {
  history.pushState(null, "", href);
  render();
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

document.addEventListener("click", e => {
  const a = e.target.closest("a[href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui/") || url.pathname.startsWith("/ui/static/")) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", render);

// The key: asked for when the server answers 401, kept in sessionStorage for this tab.
const dialog = document.getElementById("key-dialog");
const input = document.getElementById("key-input");
function askKey(message) {
  document.getElementById("key-error").textContent = message || "";
  input.value = getKey();
  if (!dialog.open) dialog.showModal();
}
document.getElementById("key-button").addEventListener("click", () => askKey(""));
document.addEventListener("lorapipe:auth", e => askKey(getKey() ? e.detail : "This server needs an API key."));
dialog.addEventListener("close", async () => {
  if (dialog.returnValue === "clear") { setKey(""); render(); return; }
  if (dialog.returnValue !== "save") return;
  setKey(input.value.trim());
  try { await api("/v1/models"); } catch (e) { if (e.status === 401) return; }  // the 401 opens the dialog again
  render();
});

render();
