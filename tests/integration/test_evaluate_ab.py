"""A/B evaluation and the probe end to end on a tiny random model with a random-B LoRA adapter.

The adapter's B matrices are randomised (PEFT initialises them to zero), so the tuned arm really
differs from the base arm. A scripted judge scores answers (rubric) and compares pairs (pairwise
mode), so the numbers vary and can be checked against what the answers imply.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import make_row
from lorapipe.evaluate import pairwise
from lorapipe.llm.base import Completion, Usage

NAMES = ["Ann Lee", "Zoé Müller", "Bob Fox", "Lazy Dog", "Quick Brown", "<script>alert('x')</script> & Co"]
TASK = {"name": "contacts", "description": "Extract the contact's name as JSON.",
        "system_prompt": "Extract the name as JSON with key name.",
        "quality_criteria": ["names the person", "adds nothing else"]}
TRAINER_LOG = ([{"step": s, "loss": 3.0 / (1 + s / 10), "learning_rate": 1e-4} for s in range(5, 100, 5)]
               + [{"step": s, "eval_loss": 3.3 / (1 + s / 12)} for s in (20, 40, 60, 80)])


class ScriptedJudge:
    """Rubric requests: a score from the length of the request (varied, deterministic). Pairwise
    requests: the longer answer wins, equal lengths tie (consistent under the position swap)."""

    def __init__(self):
        self.usage, self.calls = Usage(), 0

    def identity(self):
        return {"kind": "python", "model": "scripted-judge"}

    def complete(self, requests, progress=None):
        out = []
        for r in requests:
            self.calls += 1
            text = r.messages[-1]["content"]
            if r.messages[0]["content"] == pairwise.SYSTEM:
                a = re.search(r"### Answer A\n(.*?)\n\n### Answer B", text, re.DOTALL).group(1)
                b = re.search(r"### Answer B\n(.*?)\n\nWhich answer", text, re.DOTALL).group(1)
                w = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
                out.append(Completion(text=json.dumps({"winner": w, "reason": "longer"})))
            else:
                out.append(Completion(text=json.dumps({"score": len(text) % 6, "rationale": "scripted"})))
        if progress:
            progress(len(requests))
        return out


def make_cfg(tmp: Path, model_dir: Path, **sections) -> PipelineConfig:
    data = {"task": dict(TASK), "base_model": str(model_dir), "data": {"train_file": str(tmp / "rows.jsonl")},
            "evaluate": {"bootstrap_samples": 300, "max_new_tokens": 12, "batch_size": 4},
            "train": {"per_device_eval_batch_size": 4, "max_seq_length": 128}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return PipelineConfig.model_validate(data)


def eval_rows(cfg) -> list[dict]:
    return [make_row(cfg.task.system_prompt, f"Hi, I'm {n}, reach me at x@example.com", json.dumps({"name": n}))
            for n in NAMES]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from threads, and on a busy machine two spinning threads make
    generation ~15x slower; restore the setting for the modules after this one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    import torch
    from peft import LoraConfig, get_peft_model

    from lorapipe import models
    from lorapipe.testing import build_tiny_model

    tmp = tmp_path_factory.mktemp("ab")
    model_dir = build_tiny_model(tmp / "tiny")
    base, tok, _ = models.load(str(model_dir))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    peft_model.save_pretrained(tmp / "adapter")
    from lorapipe.manifest import Manifest

    # as `lorapipe train` writes it: every file hashed, so the adapter check at load passes
    Manifest(stage="train", config_hash="test", extra={"base_model": models.resolve(str(model_dir)).identity()}
             ).save(tmp / "adapter")
    return tmp, model_dir, peft_model, tok


@pytest.fixture(scope="module")
def ab_run(setup):
    from lorapipe.evaluate import ab

    tmp, model_dir, peft_model, tok = setup
    cfg = make_cfg(tmp, model_dir, evaluate={"pairwise_judge": True})
    rows = eval_rows(cfg)
    ticks = []
    shots = [{"role": "user", "content": "Hi, I'm Ann Lee"}, {"role": "assistant", "content": '{"name": "Ann Lee"}'}]
    manifest = ab.run(cfg, peft_model, tok, rows, tmp / "evaluate", judge=ScriptedJudge(), few_shot_messages=shots,
                      progress=ticks.append, trainer_log=TRAINER_LOG,
                      probe={"verdict": "fine-tune", "compliance": 0.0, "mean_score": 0.0, "n_answers": 8})
    result = json.loads((tmp / "evaluate" / "ab.json").read_text())
    return cfg, rows, manifest, result, ticks


def test_ab_writes_every_artifact_and_manifest(ab_run, setup):
    _, rows, manifest, result, ticks = ab_run
    out = setup[0] / "evaluate"
    assert sorted(p.name for p in out.iterdir()) == ["ab.json", "answers.jsonl", "manifest.json", "report.html",
                                                      "summary.md"]
    assert set(manifest.outputs) == {"ab.json", "answers.jsonl", "report.html", "summary.md"}
    assert manifest.stage == "evaluate"
    assert manifest.metrics["verdict"] in ("better", "worse", "unclear")
    assert manifest.metrics["n"] == len(rows)
    assert sum(ticks) == 3 * len(rows)  # one tick per answer, three arms
    assert set(result["arms"]) == {"base", "tuned", "few_shot"}
    assert set(result["comparisons"]) == {"tuned_vs_base", "tuned_vs_few_shot", "few_shot_vs_base"}
    assert (out / "summary.md").read_text().startswith("# A/B: contacts — base vs tuned\n\n**")
    assert len((out / "answers.jsonl").read_text().splitlines()) == len(rows)


def test_ab_outcomes_follow_the_scores(ab_run):
    _, rows, _, result, _ = ab_run
    c = result["comparisons"]["tuned_vs_base"]
    expected = [(ex["tuned"]["score"] > ex["base"]["score"]) - (ex["tuned"]["score"] < ex["base"]["score"])
                for ex in result["examples"]]
    assert [ex["outcome"] for ex in result["examples"]] == expected == c["outcomes"]
    assert c["wins"] + c["ties"] + c["losses"] == c["n"] == len(rows)
    assert c["win_rate"] == pytest.approx((c["wins"] + 0.5 * c["ties"]) / c["n"])
    assert c["ci_low"] <= c["win_rate"] <= c["ci_high"]
    assert set(c["per_criterion"]) >= {"rules"}
    assert result["verdict"]["line"].split(":")[0] in (
        "Tuned beats base", "Tuned is WORSE than base", "No clear difference between tuned and base")
    assert all(ex["base"]["exact_match"] is False for ex in result["examples"])  # random model, JSON reference


def test_base_arm_is_the_plain_base_model_and_tuned_differs(ab_run, setup):
    from lorapipe import models
    from lorapipe.evaluate.ab import prompt_messages
    from lorapipe.generation import generate

    cfg, rows, _, result, _ = ab_run
    _, model_dir, peft_model, tok = setup
    fresh, _, _ = models.load(str(model_dir))
    convs = [prompt_messages(cfg, r) for r in rows]
    kw = {"max_new_tokens": 12, "temperature": 0.0, "batch_size": 4, "seed": 0}
    plain = [g.text for g in generate(fresh, tok, convs, **kw)]
    assert [ex["base"]["output"] for ex in result["examples"]] == plain
    tuned = [g.text for g in generate(peft_model, tok, convs, **kw)]  # the adapter is active again afterwards
    assert [ex["tuned"]["output"] for ex in result["examples"]] == tuned
    assert tuned != plain


def test_eval_loss_uses_the_training_masking(ab_run, setup):
    import torch

    from lorapipe import models
    from lorapipe.evaluate.metrics import eval_loss
    from lorapipe.train.collate import DataCollator, encode_rows

    _, rows, _, result, _ = ab_run
    _, model_dir, peft_model, tok = setup
    fresh, _, _ = models.load(str(model_dir))
    features, _ = encode_rows(tok, rows, 128)
    batch = DataCollator(tok.pad_token_id)(features)
    with torch.no_grad():  # HF's own loss over one batch of every row is the token-weighted mean
        base_loss = float(fresh(**batch).loss)
        tuned_loss = float(peft_model(**batch).loss)
    assert result["arms"]["base"]["eval_loss"] == pytest.approx(base_loss, rel=1e-4)
    assert result["arms"]["tuned"]["eval_loss"] == pytest.approx(tuned_loss, rel=1e-4)
    assert result["arms"]["base"]["loss_tokens"] == int((batch["labels"][:, 1:] != -100).sum())
    one_by_one = eval_loss(fresh, tok, rows, max_length=128, batch_size=1)
    assert one_by_one["loss"] == pytest.approx(base_loss, rel=1e-4)
    assert one_by_one["perplexity"] == pytest.approx(2.718281828 ** base_loss, rel=1e-4)


def test_pairwise_judge_verdicts_follow_answer_lengths(ab_run):
    _, _, _, result, _ = ab_run
    pw = result["pairwise_judge"]
    expected = [(len(ex["tuned"]["output"]) > len(ex["base"]["output"])) -
                (len(ex["tuned"]["output"]) < len(ex["base"]["output"])) for ex in result["examples"]]
    assert [p["outcome"] for p in pw["pairs"]] == expected
    assert pw["consistency"] == 1.0 and pw["unparsed"] == 0


def test_ab_needs_a_peft_model(setup):
    from lorapipe import models
    from lorapipe.errors import ModelError
    from lorapipe.evaluate import ab

    tmp, model_dir, _, tok = setup
    fresh, _, _ = models.load(str(model_dir))
    cfg = make_cfg(tmp, model_dir)
    with pytest.raises(ModelError, match="needs the tuned model as a peft.PeftModel .* got LlamaForCausalLM"):
        ab.run(cfg, fresh, tok, eval_rows(cfg), tmp / "nope")


def test_check_sets_are_answered_by_every_arm_and_analysed_per_field(setup, tmp_path):
    from lorapipe.evaluate import ab

    tmp, model_dir, peft_model, tok = setup
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": ["string", "null"]}}}
    labelled = tmp_path / "unseen.jsonl"
    labelled.write_text("".join(json.dumps({"id": f"u{k}", "text": f"Thanks! {n}", "name": n}) + "\n"
                                for k, n in enumerate(NAMES[:3])))
    cfg = make_cfg(tmp, model_dir, task={"output_schema": schema},
                   evaluate={"extra_sets": [{"name": "unseen", "file": str(labelled)}]})
    extra = ab.read_extra_sets(cfg)
    assert [json.loads(r["messages"][-1]["content"]) for r in extra["unseen"]] == [{"name": n} for n in NAMES[:3]]
    ticks = []
    m = ab.run(cfg, peft_model, tok, eval_rows(cfg)[:2], tmp_path / "evaluate", progress=ticks.append,
               extra_sets=extra)
    result = json.loads((tmp_path / "evaluate" / "ab.json").read_text())
    assert sum(ticks) == 2 * (2 + 3)  # two arms answer the eval rows and the check set
    cs = result["extra_sets"]["unseen"]
    assert cs["n"] == 3 and set(cs["arms"]) == {"base", "tuned"}
    assert [e["id"] for e in cs["examples"]] == ["u0", "u1", "u2"]
    assert cs["arms"]["tuned"]["exact_match"] == 0.0  # a random model
    assert cs["analysis"]["tuned"]["per_field"]["name"]["exact"] == 0.0
    assert "name" in result["analysis"]["base"]["per_field"]  # the eval split is analysed too
    assert m.metrics["extra_sets"] == {"unseen": {"n": 3, "base_exact_match": 0.0, "tuned_exact_match": 0.0,
                                                  "base_mean_score": cs["arms"]["base"]["mean_score"],
                                                  "tuned_mean_score": cs["arms"]["tuned"]["mean_score"]}}
    assert set(m.inputs) == {"eval_rows", "adapter", "extra_set:unseen"}
    html = (tmp_path / "evaluate" / "report.html").read_text()
    assert 'id="check-sets"' in html and 'id="error-analysis"' in html and "check set: unseen" in html
    summary = (tmp_path / "evaluate" / "summary.md").read_text()
    assert "check set `unseen` (3 inputs, never trained on): exact match base + prompt 0%, tuned 0%" in summary
    assert "## Exact match per field and misses: check set `unseen`" in summary


def test_probe_end_to_end_with_a_schema(setup):
    from lorapipe import probe

    tmp, model_dir, peft_model, tok = setup
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    cfg = make_cfg(tmp, model_dir, task={"output_schema": schema},
                   probe={"n_inputs": 3, "samples": 2, "max_new_tokens": 8, "temperature": 0.9})
    inputs = [{"id": f"i{k}", "text": f"Hi, I'm {n}"} for k, n in enumerate(NAMES)]
    ticks = []
    with peft_model.disable_adapter():
        m = probe.run(cfg, peft_model, tok, inputs, tmp / "probe", progress=ticks.append)
    r = json.loads((tmp / "probe" / "probe.json").read_text())
    assert sorted(p.name for p in (tmp / "probe").iterdir()) == ["manifest.json", "probe.json", "probe.md",
                                                                 "samples.jsonl"]
    assert sum(ticks) == 6 and r["n_answers"] == 6 and r["n_inputs"] == 3
    # A random model writes no valid JSON: nothing complies, so prompting is not enough.
    assert r["compliance"] == 0.0 and r["verdict"] == "fine-tune" and m.metrics["verdict"] == "fine-tune"
    assert r["worst"][0]["reasons"] and r["worst"][0]["compliant"] is False
    assert probe.summary(r).startswith("**Fine-tune")


# ------------------------------------------------------------------------------------- the report in a browser
CHROMIUM = next((c for c in ("chromium", "chromium-browser", "google-chrome") if __import__("shutil").which(c)), None)
# Appended to a *copy* of the report (the report itself has no script): records each element's box and
# visibility as attributes, which --dump-dom then shows.
PROBE_SCRIPT = """<script>
for (const id of %s) {
  const el = document.getElementById(id);
  if (!el) continue;
  const r = el.getBoundingClientRect(), s = getComputedStyle(el);
  el.setAttribute('data-box', [r.x, r.y, r.width, r.height].map(Math.round).join(','));
  el.setAttribute('data-visible', String(r.width > 0 && r.height > 0 && s.visibility !== 'hidden'
    && s.display !== 'none' && r.x >= 0 && r.x + r.width <= innerWidth + 1));
}
</script>"""
CHECKED = ["verdict", "verdict-headline", "win-rate", "ci-plot", "loss-plot", "score-hist", "criteria-plot",
           "examples", "regressions", "metrics"]


def chromium(*args: str, tmp: Path) -> str:
    import subprocess

    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chrome-profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, unfiltered rows) of an 8-bit, non-interlaced PNG."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0, "only 8-bit non-interlaced PNGs are decoded here"
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(ab_run, setup):
    tmp = setup[0]
    html = (tmp / "evaluate" / "report.html").read_text()
    assert "<script" not in html  # the input named <script>alert('x')</script> is shown, not run
    copy = tmp / "report-probe.html"
    copy.write_text(html.replace("</body>", PROBE_SCRIPT % json.dumps(CHECKED) + "</body>"))
    dom = chromium("--window-size=1280,2400", "--dump-dom", copy.as_uri(), tmp=tmp)
    for element in CHECKED:
        m = re.search(rf'id="{element}"[^>]*?data-box="([\d,-]+)" data-visible="(\w+)"', dom)
        assert m, f"#{element} missing from the rendered page"
        assert m.group(2) == "true", f"#{element} is not visible (box {m.group(1)})"
    from lorapipe.evaluate.report import HEADLINE

    headline = HEADLINE[ab_run[3]["comparisons"]["tuned_vs_base"]["verdict"]]
    assert re.search(rf'id="verdict-headline"[^>]*>{headline}</div>', dom)
    assert dom.count("<tr>") >= len(NAMES)  # one examples row per input (plus regressions rows)
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; Co" in dom
    assert re.search(r'id="loss-plot".*?<path d="M', dom, re.DOTALL), "the loss curve has no line"

    png = tmp / "report.png"  # kept in the test's tmp dir, to look at
    chromium("--window-size=1280,2400", f"--screenshot={png}", (tmp / "evaluate" / "report.html").as_uri(), tmp=tmp)
    width, height, bpp, rows = decode_png(png.read_bytes())
    assert (width, height) == (1280, 2400)
    pixels = [row[x:x + 3] for row in rows[::8] for x in range(0, len(row), 8 * bpp)]
    background = max(set(pixels), key=pixels.count)
    assert len(set(pixels)) > 50, "the screenshot is nearly uniform"
    assert sum(p != background for p in pixels) / len(pixels) > 0.2, "the screenshot is mostly empty"


# ------------------------------------------------------------------------------------- the CLI
@pytest.fixture()
def cli_config(setup, tmp_path, monkeypatch):
    tmp, model_dir, _, _ = setup
    monkeypatch.setenv("LORAPIPE_QUIET", "1")
    cfg = make_cfg(tmp, model_dir)
    rows = eval_rows(cfg)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pipeline.yaml").write_text(json.dumps({
        "task": TASK, "base_model": str(model_dir), "output_dir": "out",
        "data": {"train_file": "rows.jsonl", "eval_file": "rows.jsonl"},
        "probe": {"n_inputs": 2, "samples": 1, "max_new_tokens": 6},
        "evaluate": {"max_new_tokens": 6, "bootstrap_samples": 200, "batch_size": 4}}))
    return tmp_path / "pipeline.yaml"


def test_cli_eval_writes_the_report_with_the_trainer_log(cli_config, setup):
    from typer.testing import CliRunner

    from lorapipe.cli import app

    adapter = setup[0] / "adapter"
    (adapter.parent / "trainer_log.json").write_text(json.dumps(TRAINER_LOG))
    res = CliRunner().invoke(app, ["--json", "eval", str(cli_config), "--adapter", str(adapter), "--max-inputs", "3"])
    assert res.exit_code == 0, (res.output, res.exception)
    out = json.loads(res.stdout)
    run_dir = cli_config.parent / "out" / "evaluate"
    assert out["out"] == str(run_dir) and out["metrics"]["n"] == 3
    assert out["verdict"] == json.loads((run_dir / "ab.json").read_text())["verdict"]["line"]
    assert 'id="loss-plot"' in (run_dir / "report.html").read_text()
    assert "No trainer log" not in (run_dir / "report.html").read_text()


def test_cli_probe_uses_the_train_file_inputs(cli_config):
    from typer.testing import CliRunner

    from lorapipe.cli import app

    res = CliRunner().invoke(app, ["probe", str(cli_config)])
    assert res.exit_code == 0, (res.output, res.exception)
    assert res.stdout.splitlines()[0].startswith(("**Fine-tune: the prompted base model falls short.**",
                                                  "**Prompting is enough: the base model already does the task"))
    assert json.loads((cli_config.parent / "out" / "probe" / "probe.json").read_text())["n_answers"] == 2


def test_cli_eval_without_eval_rows_says_how_to_get_them(cli_config, setup, tmp_path):
    from typer.testing import CliRunner

    from lorapipe.cli import app

    res = CliRunner().invoke(app, ["eval", str(cli_config), "--adapter", str(setup[0] / "adapter"),
                                   "--eval-file", str(tmp_path / "missing.jsonl")])
    assert res.exit_code != 0
    assert "missing.jsonl: eval rows not found; pass --eval-file FILE, set data.eval_file" in str(res.exception)
