"""`lorapipe run` end to end on a tiny random model with a python teacher: every stage, then caching."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TEACHER = '''
import json, re

def _fenced(text):
    return re.search(r"Input:\\n<<<\\n(.*?)\\n>>>", text, re.S).group(1)

def answer(messages, **params):
    last = messages[-1]["content"]
    if "Paraphrase the input below" in last:
        return "Note: " + _fenced(last)
    if last.startswith("You are writing test inputs"):
        n = re.search(r"case number (\\d+)", last).group(1)
        return f"Quick one from Gil Ray{n}: gil{n}@ray.org"
    text = _fenced(last)
    email = re.search(r"[\\w.]+@[\\w.]+\\w", text)
    name = re.search(r"(?:I am|from) ([A-Z][a-z]+ [A-Z][a-z]+\\d*)", text)
    return json.dumps({"name": name.group(1) if name else None, "email": email.group(0) if email else None})
'''

NAMES = ["Ann Lee", "Bob Ray", "Cid Moe", "Dee Wu", "Eve Park", "Fay Ito", "Gus Hale", "Hal Kim"]


def write_tiny_project(root: Path, model: Path, *, teacher: str = "teacher", name: str = "tiny-contacts",
                       probe_inputs: int = 3, max_steps: int = 3, eval_steps: int = 3, eval_inputs: int = 4) -> Path:
    """A tiny contact-extraction project in ``root``: a python teacher module, 30 inputs, pipeline.yaml."""
    (root / f"{teacher}.py").write_text(TEACHER)
    rows = [{"text": f"Hello, I am {NAMES[i % 8]}, mail {NAMES[i % 8].split()[0].lower()}{i}@ex.com re order {i}"}
            for i in range(30)]
    (root / "inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        # lorapipe run pipeline.yaml
        task:
          name: {name}
          description: Extract the sender's name and e-mail as JSON.
          system_prompt: Return the sender's name and e-mail as JSON.
          output_schema:
            type: object
            required: [name, email]
            additionalProperties: false
            properties: {{name: {{type: [string, "null"]}}, email: {{type: [string, "null"]}}}}
        base_model: {model}
        data: {{inputs: inputs.jsonl}}
        teacher: {{kind: python, function: "{teacher}:answer"}}
        probe: {{n_inputs: {probe_inputs}, samples: 1, max_new_tokens: 8}}
        score: {{rules: {{grounding: true}}}}
        augment: {{paraphrases: 1, edge_cases: {{short: 2, ambiguous: 0, adversarial: 1}}}}
        split: {{eval_fraction: 0.2}}
        lora: {{r: 4, lora_alpha: 8}}
        train: {{max_steps: {max_steps}, per_device_train_batch_size: 4, gradient_accumulation_steps: 1,
                 logging_steps: 1, eval_steps: {eval_steps}, save_steps: {max_steps}}}
        evaluate: {{max_inputs: {eval_inputs}, max_new_tokens: 8}}
        """))
    return root


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    return write_tiny_project(tmp_path, tiny_model_dir)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lorapipe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def test_run_every_stage_then_skip_then_rerun_downstream(project):
    r = cli("--json", "run", "pipeline.yaml", cwd=project)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout)
    assert out["ran"] == ["probe", "generate", "score", "augment", "split", "train", "evaluate"]
    run = project / "runs" / "tiny-contacts"
    for f in ["probe/probe.json", "generate/generated.jsonl", "score/scored.jsonl", "score/rejected.jsonl",
              "augment/augmented.jsonl", "split/train.jsonl", "split/eval.jsonl", "data_card/data_card.md",
              "train/adapter/adapter_model.safetensors", "evaluate/ab.json", "evaluate/report.html",
              "config.json", "run.json"]:
        assert (run / f).is_file(), f
    for stage in out["ran"]:
        assert json.loads((run / stage / "manifest.json").read_text())["stage"] == stage

    origins = {json.loads(x)["meta"]["origin"] for x in (run / "augment/augmented.jsonl").read_text().splitlines()}
    assert {"teacher", "paraphrase"} <= origins
    train_src = {json.loads(x)["meta"]["source_id"] for x in (run / "split/train.jsonl").read_text().splitlines()}
    eval_src = {json.loads(x)["meta"]["source_id"] for x in (run / "split/eval.jsonl").read_text().splitlines()}
    assert train_src and eval_src and not train_src & eval_src
    ab = json.loads((run / "evaluate/ab.json").read_text())
    assert "tuned" in json.dumps(ab) and "win_rate" in json.dumps(ab)
    assert out["probe_verdict"] == "fine-tune"  # a random model does not follow the format
    assert "win_rate" in json.dumps(out["ab"])

    # Nothing changed: every stage is skipped.
    r2 = cli("--json", "run", "pipeline.yaml", cwd=project)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads(r2.stdout)["ran"] == []

    # A change to the train section re-runs train and what follows, nothing before.
    r3 = cli("--json", "run", "pipeline.yaml", "--set", "lora.r=2", cwd=project)
    assert r3.returncode == 0, r3.stderr[-3000:]
    o3 = json.loads(r3.stdout)
    assert o3["ran"] == ["train", "evaluate"]
    assert o3["skipped"] == ["probe", "generate", "score", "augment", "split"]

    # --force from a stage re-runs it and everything after it.
    r4 = cli("--json", "run", "pipeline.yaml", "--set", "lora.r=2", "--force", "split", cwd=project)
    assert json.loads(r4.stdout)["ran"] == ["split", "train", "evaluate"]
