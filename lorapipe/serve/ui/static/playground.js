// Compare playground: one prompt, 2–4 models side by side, streamed from /v1/chat/completions.
import { api, sse, el, errorBox, fmtNum } from "./core.js";

const MAX_MODELS = 4;

export async function playgroundPage(main, { signal }) {
  main.append(el("h1", {}, "Compare playground"));
  let models;
  try { models = (await api("/v1/models", { signal })).data.map(m => m.id); } catch (e) { main.append(errorBox(e)); return; }
  const wanted = new URL(location.href).searchParams.getAll("model");
  const initial = wanted.length ? wanted : models.slice(0, 2);
  const picks = el("fieldset", { class: "models" }, el("legend", {}, `Models (2–${MAX_MODELS})`),
    models.map((m, i) => el("label", { class: "check" },
      el("input", { type: "checkbox", name: "model", value: m, id: `m-${i}`, checked: initial.includes(m) }), " ", m)));
  const system = el("textarea", { id: "p-system", rows: 2, placeholder: "optional; the same for every model" });
  const prompt = el("textarea", { id: "p-prompt", rows: 4, required: true, placeholder: "Type a message…" });
  const temperature = el("input", { id: "p-temperature", type: "number", min: 0, max: 2, step: "any", value: 0 });
  const topP = el("input", { id: "p-top-p", type: "number", min: 0.01, max: 1, step: "any", value: 1 });
  const maxTokens = el("input", { id: "p-max-tokens", type: "number", min: 1, max: 4096, step: 1, value: 128 });
  const seed = el("input", { id: "p-seed", type: "number", step: 1, placeholder: "none" });
  const send = el("button", { type: "submit", class: "primary", id: "p-send" }, "Send");
  const stop = el("button", { type: "button", id: "p-stop", disabled: true }, "Stop");
  const problem = el("p", { class: "error", role: "alert" });
  const outputs = el("div", { class: "compare", id: "outputs" });
  const field = (input, label) => el("div", { class: "field" }, el("label", { for: input.id }, label), input);
  const form = el("form", { class: "playground" }, picks,
    field(system, "System prompt"), field(prompt, "Message"),
    el("div", { class: "params" }, field(temperature, "Temperature"), field(topP, "Top-p"), field(maxTokens, "Max tokens"),
      field(seed, "Seed")), el("div", { class: "row" }, send, stop), problem);
  main.append(form, outputs);
  let running = null;

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const chosen = [...picks.querySelectorAll("input:checked")].map(x => x.value);
    if (chosen.length < 2 || chosen.length > MAX_MODELS) { problem.textContent = `Pick 2 to ${MAX_MODELS} models (${chosen.length} picked).`; return; }
    if (!prompt.value.trim()) { problem.textContent = "Type a message first."; prompt.focus(); return; }
    problem.textContent = "";
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: prompt.value });
    const params = { temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value) };
    if (seed.value !== "") params.seed = Number(seed.value);
    running = new AbortController();
    signal.addEventListener("abort", () => running && running.abort());
    send.disabled = true; stop.disabled = false;
    outputs.style.setProperty("--cols", chosen.length);
    await Promise.all(chosen.map(model => stream(model, messages, params, running.signal)));
    send.disabled = false; stop.disabled = true; running = null;
  });
  stop.addEventListener("click", () => running && running.abort());

  async function stream(model, messages, params, sig) {
    const text = el("pre", { class: "answer", "aria-live": "off" });
    const stats = { tokens: el("span", { class: "num" }, "0"), rate: el("span", { class: "num" }, "–"),
      ttft: el("span", { class: "num" }, "–"), state: el("span", { class: "badge running" }, "waiting") };
    outputs.append(el("section", { class: "card out", "data-model": model },
      el("h2", {}, el("code", {}, model)),
      el("p", { class: "stats" }, stats.state, " ", stats.tokens, " tokens · ", stats.rate, " tokens/s · first token ", stats.ttft),
      text));
    const t0 = performance.now();
    let first = null, chunks = 0, usage = null, fingerprint = "";
    const update = () => {
      const n = usage ? usage.completion_tokens : chunks;
      stats.tokens.textContent = fmtNum(n);
      if (first !== null) {
        const dt = (performance.now() - first) / 1000;
        stats.ttft.textContent = ((first - t0) / 1000).toFixed(2) + " s";
        if (dt > 0 && n > 1) stats.rate.textContent = ((n - 1) / dt).toFixed(1);
      }
    };
    try {
      await sse("/v1/chat/completions", { method: "POST", signal: sig,
        json: { model, messages, stream: true, stream_options: { include_usage: true }, ...params },
        onEvent: ev => {
          if (ev.data === "[DONE]") return;
          const chunk = JSON.parse(ev.data);
          if (chunk.error) throw new Error(chunk.error.message);
          fingerprint = chunk.system_fingerprint || fingerprint;
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (first === null) { first = performance.now(); stats.state.textContent = "streaming"; }
            chunks += 1;
            text.textContent += delta.content;
          }
          update();
        } });
      update();
      stats.state.className = "badge ran";
      stats.state.textContent = "done";
      if (fingerprint) stats.state.title = "answered by " + fingerprint;
    } catch (e) {
      stats.state.className = "badge failed";
      stats.state.textContent = sig.aborted ? "stopped" : "error";
      if (!sig.aborted) text.after(errorBox(e));
    }
  }
}
