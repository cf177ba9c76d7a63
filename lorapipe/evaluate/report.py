"""``report.html``: one self-contained page that answers "did fine-tuning help?" at a glance.

Verdict first (win rate, its 95 % interval, wins/ties/losses, mean scores), then the numbers per
arm, the training and eval loss curves, score histograms, per-criterion bars, the probe's verdict,
the worst regressions and example answers side by side. Charts are inline SVG
(:mod:`lorapipe.evaluate.svg`); there is no script, no external CSS and nothing fetched, so the file
opens anywhere, offline. Every piece of model or user text is HTML-escaped.
"""

from __future__ import annotations

import json
import math
import time
from html import escape
from pathlib import Path
from typing import Any

from lorapipe.evaluate import svg
from lorapipe.evaluate.analysis import MISS_HELP, MISS_KINDS
from lorapipe.manifest import atomic_write

COLORS = {"base": "#94a3b8", "tuned": "#4f46e5", "few_shot": "#f59e0b"}
VERDICT_STYLE = {"better": ("#059669", "#ecfdf5"), "worse": ("#dc2626", "#fef2f2"), "unclear": ("#b45309", "#fffbeb")}
HEADLINE = {"better": "The tuned model beats the base", "worse": "The tuned model is worse than the base",
            "unclear": "No clear difference between tuned and base"}
N_EXAMPLES = 20
N_REGRESSIONS = 5
SMALL_N = 20

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f8fafc;color:#0f172a;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue","Liberation Sans","DejaVu Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:32px 28px 64px}
.kicker{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:#64748b;font-weight:600}
h1{font-size:30px;margin:4px 0 6px;letter-spacing:-.01em}
h2{font-size:19px;margin:0 0 14px}
.sub{color:#475569;font-size:13px}
.sub code{background:#e2e8f0;border-radius:4px;padding:1px 5px;font-size:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:14px;padding:22px 24px;margin-top:22px;
box-shadow:0 1px 2px rgba(15,23,42,.04)}
.verdict{border-left:8px solid var(--c);background:var(--bg)}
.verdict .headline{font-size:30px;font-weight:750;color:var(--c);letter-spacing:-.01em;margin-bottom:16px}
.hero{display:grid;grid-template-columns:auto 1fr;gap:8px 36px;align-items:center}
.big{font-size:76px;line-height:1;font-weight:800;color:#0f172a;letter-spacing:-.03em}
.big small{display:block;font-size:14px;font-weight:500;color:#475569;letter-spacing:0;margin-top:8px}
.facts{display:grid;grid-template-columns:repeat(3,1fr);gap:14px;margin-top:18px}
.fact{background:rgba(255,255,255,.7);border-radius:10px;padding:10px 14px}
.fact b{display:block;font-size:22px}
.fact span{font-size:12px;color:#64748b}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:22px}
.grid2 .card,.grid3 .card{margin-top:22px}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:22px}
.grid3 p{margin:0;color:#334155}
.chart{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#64748b;
border-bottom:2px solid #e2e8f0;padding:8px 10px}
td{border-bottom:1px solid #f1f5f9;padding:8px 10px;vertical-align:top}
td.num{font-variant-numeric:tabular-nums;text-align:right}
.metrics td:first-child{color:#475569}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono",monospace;
max-height:180px;overflow:auto;background:#f8fafc;border-radius:8px;padding:8px 10px}
.score{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:700;color:#fff;
margin-bottom:6px}
.badge{display:inline-block;border-radius:6px;padding:2px 8px;font-size:12px;font-weight:700;white-space:nowrap}
.ref{margin-top:6px;font-size:11px;color:#64748b;text-transform:uppercase;letter-spacing:.05em}
pre.reference{background:#f0fdf4;max-height:90px}
.win{background:#d1fae5;color:#047857}.loss{background:#fee2e2;color:#b91c1c}.tie{background:#e2e8f0;color:#475569}
.examples td{width:32%}.examples td.input{width:26%}.examples td.out{width:10%}
.muted{color:#64748b;font-size:13px}
.note{color:#92400e;font-size:13px}
h3{font-size:15px;margin:18px 0 8px}
"""


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.0%}"


def _num(v: Any, fmt: str = "{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _score_color(s: float) -> str:
    return "#059669" if s >= 4 else ("#d97706" if s >= 2.5 else "#dc2626")


def _score_badge(s: float) -> str:
    return f'<span class="score" style="background:{_score_color(s)}">{s:.1f}</span>'


def _outcome_badge(o: int) -> str:
    return {1: '<span class="badge win">tuned wins</span>', -1: '<span class="badge loss">base wins</span>'}.get(
        o, '<span class="badge tie">tie</span>')


def _verdict(ab: dict[str, Any]) -> str:
    c = ab["comparisons"]["tuned_vs_base"]
    color, bg = VERDICT_STYLE[c["verdict"]]
    base, tuned = ab["arms"]["base"]["mean_score"], ab["arms"]["tuned"]["mean_score"]
    d = c["mean_delta"]
    sure = {"better": "the whole 95% interval lies above 50%", "worse": "the whole 95% interval lies below 50%",
            "unclear": "the 95% interval includes 50% (no difference)"}[c["verdict"]]
    if c["n"] < SMALL_N:  # percentile bootstrap intervals come out too narrow on a handful of pairs
        sure += f". Only {c['n']} inputs: treat the interval as rough and lean on the sign test"
    return f"""
<section class="card verdict" id="verdict" style="--c:{color};--bg:{bg}">
  <div class="headline" id="verdict-headline">{escape(HEADLINE[c['verdict']])}</div>
  <div class="hero">
    <div class="big" id="win-rate">{_pct(c['win_rate'])}<small>tuned win rate over {c['n']} inputs
      (ties count half)</small></div>
    <div>
      <div class="muted">95% confidence interval <b>{_pct(c['ci_low'])} – {_pct(c['ci_high'])}</b>: {sure}</div>
      {svg.interval(c['win_rate'], c['ci_low'], c['ci_high'], color=color, element_id='ci-plot')}
      {svg.stacked([('win' if c['wins'] == 1 else 'wins', '#059669', c['wins']),
                    ('tie' if c['ties'] == 1 else 'ties', '#94a3b8', c['ties']),
                    ('loss' if c['losses'] == 1 else 'losses', '#dc2626', c['losses'])], element_id='wtl-bar')}
    </div>
  </div>
  <div class="facts">
    <div class="fact"><b>{_num(base)} → {_num(tuned)}</b><span>mean rubric score, base → tuned (0–5)</span></div>
    <div class="fact"><b>{d['delta']:+.2f}</b><span>mean score change, 95% CI {d['ci_low']:+.2f} to
      {d['ci_high']:+.2f}</span></div>
    <div class="fact"><b>{c['wins']} / {c['ties']} / {c['losses']}</b><span>wins / ties / losses;
      sign test p = {c['p_value']:.3g}</span></div>
  </div>
</section>"""


def _metrics_table(ab: dict[str, Any]) -> str:
    arms = ab["arms"]
    rows = [("Mean rubric score (0–5)", "mean_score", "{:.2f}"), ("Format compliance", "compliance", None),
            ("Exact match vs reference", "exact_match", None), ("Eval loss (reply tokens)", "eval_loss", "{:.3f}"),
            ("Perplexity", "perplexity", "{:.2f}"), ("Output tokens per answer", "mean_output_tokens", "{:.1f}"),
            ("Seconds per answer", "mean_seconds", "{:.3f}"), ("Judge errors", "judge_errors", "{:d}")]
    head = "".join(f'<th style="text-align:right">{escape(a["label"])}</th>' for a in arms.values())
    body = []
    for label, key, fmt in rows:
        cells = "".join(f'<td class="num">{(_pct(a.get(key)) if fmt is None else _num(a.get(key), fmt))}</td>'
                        for a in arms.values())
        body.append(f"<tr><td>{escape(label)}</td>{cells}</tr>")
    return (f'<section class="card" id="metrics"><h2>By the numbers</h2><table class="metrics"><thead><tr><th>'
            f'</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>')


def _check_sets(ab: dict[str, Any]) -> str:
    """Exact match and mean score of every arm on the eval split and on each check set, one column each."""
    sets = ab.get("extra_sets") or {}
    if not sets:
        return ""
    cols = [("eval split", ab["n"], ab["arms"])] + [(name, cs["n"], cs["arms"]) for name, cs in sets.items()]
    head = "".join(f'<th style="text-align:right">{escape(name)} <span class="muted">({n})</span></th>'
                   for name, n, _ in cols)
    body = []
    for arm, a in ab["arms"].items():
        for label, key, fmt in (("exact match", "exact_match", None), ("mean score", "mean_score", "{:.2f}")):
            cells = "".join(f'<td class="num">{_pct(arms[arm][key]) if fmt is None else _num(arms[arm][key], fmt)}</td>'
                            for _, _, arms in cols)
            body.append(f"<tr><td>{escape(a['label'])}: {label}</td>{cells}</tr>")
    return (f'<section class="card" id="check-sets"><h2>Check sets <span class="muted">(evaluate.extra_sets: '
            f'labelled inputs never trained on, same rubric)</span></h2><table class="metrics"><thead><tr><th></th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></section>')


def _analysis_block(title: str, analysis: dict[str, Any], labels: dict[str, str]) -> str:
    arms = [a for a, x in analysis.items() if x]
    head = "".join(f'<th style="text-align:right">{escape(labels[a])}</th>' for a in arms)
    fields = "".join(f"<tr><td>{escape(p)}</td>" + "".join(
        f'<td class="num">{_pct(analysis[a]["per_field"][p]["exact"])}</td>' for a in arms) + "</tr>"
        for p in analysis[arms[0]]["per_field"])
    kinds = "".join(f"<tr><td><b>{escape(k.replace('_', ' '))}</b> <span class='muted'>{escape(MISS_HELP[k])}</span>"
                    "</td>" + "".join(f'<td class="num">{analysis[a]["misses"][k]}</td>' for a in arms) + "</tr>"
                    for k in MISS_KINDS)
    kinds += ("<tr><td><b>invalid</b> <span class='muted'>answers that are not a JSON object</span></td>"
              + "".join(f'<td class="num">{analysis[a]["invalid"]}</td>' for a in arms) + "</tr>")
    worst_arm = "tuned" if "tuned" in arms else arms[-1]
    rows = "".join(
        f'<tr><td><span class="badge loss">{escape(k.replace("_", " "))}</span></td><td>{escape(w["field"])}</td>'
        f'<td><pre class="reference">{escape(json.dumps(w["reference"], ensure_ascii=False))}</pre></td>'
        f'<td><pre>{escape(json.dumps(w["output_value"], ensure_ascii=False))}</pre></td>'
        f'<td class="input"><pre>{escape(w["input"])}</pre></td></tr>'
        for k in MISS_KINDS for w in analysis[worst_arm]["worst"][k])
    who = escape(labels[worst_arm])
    worst = (f'<h3>Worst misses of the {who} model</h3><table class="examples"><thead><tr>'
             f'<th>kind</th><th>field</th><th>reference</th><th>answer</th><th>input</th></tr></thead><tbody>{rows}'
             f'</tbody></table>' if rows else f'<p class="muted">The {who} model missed no field.</p>')
    return (f'<h3>{escape(title)}</h3><div class="grid2"><table class="metrics"><thead><tr><th>exact match per field'
            f'</th>{head}</tr></thead><tbody>{fields}</tbody></table><table class="metrics"><thead><tr>'
            f'<th>wrong fields, by kind</th>{head}</tr></thead><tbody>{kinds}</tbody></table></div>{worst}')


def _error_analysis(ab: dict[str, Any]) -> str:
    """Per-field exact match and the miss taxonomy (structured outputs only), eval split and check sets."""
    labels = {arm: a["label"] for arm, a in ab["arms"].items()}
    blocks = [("eval split", ab.get("analysis"))] + [(f"check set: {k}", v.get("analysis"))
                                                     for k, v in (ab.get("extra_sets") or {}).items()]
    body = "".join(_analysis_block(t, a, labels) for t, a in blocks if a)
    if not body:
        return ""
    return (f'<section class="card" id="error-analysis"><h2>Errors by field <span class="muted">(answers compared '
            f'to the reference field by field)</span></h2>{body}</section>')


def _loss_plot(trainer_log: list[dict[str, Any]] | None, ab: dict[str, Any]) -> str:
    train = [(float(e["step"]), float(e["loss"])) for e in trainer_log or [] if "loss" in e and "step" in e]
    ev = [(float(e["step"]), float(e["eval_loss"])) for e in trainer_log or [] if "eval_loss" in e and "step" in e]
    if train or ev:
        chart = svg.line_chart([("training loss", COLORS["tuned"], train), ("eval loss", "#e11d48", ev)],
                               x_label="step", y_label="loss", element_id="loss-plot")
        return f'<section class="card"><h2>Loss during training</h2>{chart}</section>'
    losses = [ab["arms"][a].get("eval_loss") for a in ("base", "tuned")]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
        return '<section class="card"><h2>Loss</h2><p class="muted" id="loss-plot">No loss was measured.</p></section>'
    # Without a trainer log, the eval loss of both arms is still worth a look.
    chart = svg.grouped_bars(["eval loss (reply tokens)"],
                             [(ab["arms"][a]["label"], COLORS[a], [v]) for a, v in zip(("base", "tuned"), losses)],
                             y_label="loss", element_id="loss-plot", value_fmt="{:.3f}")
    return (f'<section class="card"><h2>Eval loss</h2>{chart}<p class="muted">No trainer log was given, so there '
            'are no loss curves; this is the loss of both arms on the eval rows.</p></section>')


def score_histogram(ab: dict[str, Any]) -> tuple[list[str], dict[str, list[int]]]:
    """Counts of answers per score bin (0–1, 1–2, 2–3, 3–4, 4–5; a 5 goes in the last bin) per arm."""
    labels = ["0–1", "1–2", "2–3", "3–4", "4–5"]
    counts = {arm: [0] * 5 for arm in ab["arms"]}
    for ex in ab["examples"]:
        for arm, row in counts.items():
            row[min(4, max(0, math.floor(ex[arm]["score"])))] += 1
    return labels, counts


def _hist(ab: dict[str, Any]) -> str:
    labels, counts = score_histogram(ab)
    chart = svg.grouped_bars(labels, [(ab["arms"][a]["label"], COLORS[a], [float(x) for x in counts[a]])
                                      for a in counts], x_label="rubric score", y_label="answers",
                             element_id="score-hist")
    return f'<section class="card"><h2>Score distribution</h2>{chart}</section>'


def _criteria(ab: dict[str, Any]) -> str:
    crit = ab["comparisons"]["tuned_vs_base"]["per_criterion"]
    if not crit:
        return ('<section class="card"><h2>Per criterion</h2><p class="muted" id="criteria-plot">The rubric gave no '
                'per-criterion scores.</p></section>')
    names = list(crit)
    chart = svg.hbars(names, [(ab["arms"]["base"]["label"], COLORS["base"], [crit[k]["a"] for k in names]),
                              (ab["arms"]["tuned"]["label"], COLORS["tuned"], [crit[k]["b"] for k in names])],
                      deltas=[crit[k]["delta"] for k in names], element_id="criteria-plot")
    return (f'<section class="card"><h2>Per criterion <span class="muted">(mean 0–5; change on the right)</span>'
            f'</h2>{chart}</section>')


def _side_cells(ex: dict[str, Any]) -> str:
    cells = (f'<td class="input"><pre>{escape(ex["input"])}</pre><div class="ref">reference</div>'
             f'<pre class="reference">{escape(ex.get("reference", ""))}</pre></td>')
    for arm in ("base", "tuned"):
        r = ex[arm]
        flag = "" if r["compliant"] else ' <span class="badge loss">not compliant</span>'
        cells += f'<td>{_score_badge(r["score"])}{flag}<pre>{escape(r["output"]) or "<i>(empty)</i>"}</pre></td>'
    return cells


def _regressions(ab: dict[str, Any]) -> str:
    worst = sorted((x for x in ab["examples"] if x["delta"] < 0), key=lambda x: x["delta"])[:N_REGRESSIONS]
    if not worst:
        return ('<section class="card" id="regressions"><h2>Worst regressions</h2><p class="muted">None: the tuned '
                'model never scored below the base on an input.</p></section>')
    rows = "".join(f'<tr>{_side_cells(x)}<td class="num"><b style="color:#dc2626">{x["delta"]:+.1f}</b></td></tr>'
                   for x in worst)
    return (f'<section class="card" id="regressions"><h2>Worst regressions <span class="muted">(tuned scored below '
            f'base)</span></h2><table class="examples"><thead><tr><th>input</th><th>base + prompt</th><th>tuned</th>'
            f'<th>change</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _examples(ab: dict[str, Any]) -> str:
    shown = ab["examples"][:N_EXAMPLES]
    rows = "".join(f'<tr>{_side_cells(x)}<td class="out">{_outcome_badge(x["outcome"])}</td></tr>' for x in shown)
    more = (f'<p class="muted">Showing {len(shown)} of {len(ab["examples"])}; all answers are in ab.json.</p>'
            if len(ab["examples"]) > len(shown) else "")
    return (f'<section class="card"><h2>Examples side by side</h2><table class="examples" id="examples"><thead><tr>'
            f'<th>input</th><th>base + prompt</th><th>tuned</th><th>result</th></tr></thead><tbody>{rows}</tbody>'
            f'</table>{more}</section>')


def _extras(ab: dict[str, Any], probe: dict[str, Any] | None) -> str:
    out = []
    pw = ab.get("pairwise_judge")
    if pw:
        out.append(f'<section class="card" id="pairwise"><h2>Pairwise judge</h2><p>The judge compared both answers '
                   f'to each input twice, positions swapped; inconsistent verdicts count as ties. Tuned win rate '
                   f'<b>{_pct(pw["win_rate"])}</b> (95% CI {_pct(pw["ci_low"])}–{_pct(pw["ci_high"])}), '
                   f'{pw["wins"]} / {pw["ties"]} / {pw["losses"]} wins / ties / losses; '
                   f'{_pct(pw["consistency"])} of pairs judged consistently.</p></section>')
    fs = ab["comparisons"].get("tuned_vs_few_shot")
    if fs:
        out.append(f'<section class="card" id="few-shot"><h2>Against a few-shot prompt</h2><p>Tuned vs the base '
                   f'model with worked examples in its prompt: win rate <b>{_pct(fs["win_rate"])}</b> (95% CI '
                   f'{_pct(fs["ci_low"])}–{_pct(fs["ci_high"])}).</p></section>')
    if probe:
        enough = probe.get("verdict") == "prompt"
        out.append(f'<section class="card" id="probe"><h2>Before training: the probe</h2><p>Verdict '
                   f'<b>{"prompting is enough" if enough else "fine-tune"}</b> — the prompted base model was '
                   f'format-compliant {_pct(probe.get("compliance"))} of the time with a mean score of '
                   f'{_num(probe.get("mean_score"))} over {probe.get("n_answers", "?")} answers.</p></section>')
    return f'<div class="grid3">{"".join(out)}</div>' if out else ""


def render(ab: dict[str, Any], trainer_log: list[dict[str, Any]] | None = None,
           probe: dict[str, Any] | None = None) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    judge = ab.get("judge") or {}
    judge_txt = escape(judge.get("model") or judge.get("function") or judge.get("kind") or "rule checks only")
    dec = ab.get("decoding", {})
    notes = "".join(f'<p class="note">Note: {escape(n)}</p>' for n in ab.get("notes", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(ab.get('task', ''))}: base vs tuned</title><style>{CSS}</style></head>
<body><main>
<div class="kicker">lorapipe · A/B evaluation</div>
<h1>{escape(ab.get('task', ''))}: base vs tuned</h1>
<div class="sub">base model <code>{escape(str(ab.get('base_model', '')))}</code> · adapter
<code>{escape(str(ab.get('adapter_sha256', ''))[:12])}</code> · {ab['n']} held-out inputs · scored by {judge_txt} ·
temperature {dec.get('temperature', '–')}, max {dec.get('max_new_tokens', '–')} new tokens ·
{time.strftime('%Y-%m-%d %H:%M')}</div>
{notes}
{_verdict(ab)}
{_metrics_table(ab)}
{_check_sets(ab)}
{_error_analysis(ab)}
<div class="grid2">{_loss_plot(trainer_log, ab)}{_hist(ab)}</div>
{_criteria(ab)}
{_extras(ab, probe)}
{_regressions(ab)}
{_examples(ab)}
</main></body></html>
"""


def write_report(ab: dict[str, Any], out_path: str | Path, trainer_log: list[dict[str, Any]] | None = None,
                 probe: dict[str, Any] | None = None) -> Path:
    """Write ``report.html`` for an ``ab.json`` dict; ``trainer_log`` is the HF trainer's ``log_history``
    (dicts with ``step`` and ``loss`` / ``eval_loss``) and ``probe`` the ``probe.json`` dict, both optional."""
    out_path = Path(out_path)
    atomic_write(out_path, render(ab, trainer_log, probe))
    return out_path
