"""The runner owns every stage's key: for each kind of edit, exactly the stages that depend on it re-run
(and their outputs change), and nothing else. A tiny pipeline runs once, then each edit in order."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from lorapipe.config import load_config
from lorapipe.manifest import Manifest
from lorapipe.pipeline import Pipeline
from lorapipe.testing import build_tiny_model

HELPER = "INCLUDE_NAME = True\n"
TEACHER = '''
import json, re
from helper import INCLUDE_NAME

def _fenced(text):
    return re.search(r"<<<\\n(.*?)\\n>>>", text, re.S).group(1)

def answer(messages, **params):
    last = messages[-1]["content"]
    if "Paraphrase the input below" in last:
        return "Note: " + _fenced(last)
    text = _fenced(last)
    email = re.search(r"[\\w.]+@[\\w.]+\\w", text)
    name = re.search(r"I am ([A-Z][a-z]+ [A-Z][a-z]+)", text)
    keep_name = INCLUDE_NAME or "WITH-NAME" in last
    return json.dumps({"name": name.group(1) if name and keep_name else None,
                       "email": email.group(0) if email else None})
'''
JUDGE = '''
def score(messages, **params):
    return '{"score": 5, "rationale": "fine"}'
'''
CHECKS = '''
def no_digit_nine(input_text, output_text):
    return True
'''
TEMPLATE = "Task: {{ task.description }}\nInput:\n<<<\n{{ input }}\n>>>\n"
NAMES = ["Ann Lee", "Bob Ray", "Cid Moe", "Dee Wu", "Eve Park", "Fay Ito", "Gus Hale", "Hal Kim"]


def _write_inputs(root: Path, n: int) -> None:
    rows = [{"text": f"Hello, I am {NAMES[i % 8]}, mail {NAMES[i % 8].split()[0].lower()}{i}@ex.com re order {i}"}
            for i in range(n)]
    (root / "inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    build_tiny_model(tmp_path / "model", seed=0)
    (tmp_path / "helper.py").write_text(HELPER)
    (tmp_path / "teacher.py").write_text(TEACHER)
    (tmp_path / "judge.py").write_text(JUDGE)
    (tmp_path / "checks.py").write_text(CHECKS)
    (tmp_path / "prompt.j2").write_text(TEMPLATE)
    _write_inputs(tmp_path, 24)
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        # lorapipe run pipeline.yaml
        task:
          name: keys
          description: Extract the sender's name and e-mail as JSON.
          system_prompt: Return the sender's name and e-mail as JSON.
          output_schema:
            type: object
            required: [name, email]
            properties: {{name: {{type: [string, "null"]}}, email: {{type: [string, "null"]}}}}
        base_model: {tmp_path / "model"}
        data: {{inputs: inputs.jsonl}}
        teacher: {{kind: python, function: "teacher:answer"}}
        judge: {{kind: python, function: "judge:score"}}
        generate: {{template: prompt.j2}}
        probe: {{n_inputs: 3, samples: 1, max_new_tokens: 4}}
        score: {{rules: {{grounding: true, custom: ["checks:no_digit_nine"]}}}}
        augment: {{paraphrases: 1}}
        split: {{eval_fraction: 0.25}}
        lora: {{r: 2, lora_alpha: 4}}
        train: {{max_steps: 2, per_device_train_batch_size: 4, gradient_accumulation_steps: 1,
                 logging_steps: 1, eval_steps: 2, save_steps: 2}}
        evaluate: {{max_inputs: 2, max_new_tokens: 4}}
        """))
    return tmp_path


def _sub(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


ALL = ["probe", "generate", "score", "augment", "split", "train", "evaluate"]
NOT_GENERATE = [s for s in ALL if s != "generate"]
# (what is edited, the edit, the stages that must re-run). Applied in this order to one project; the
# overrides of a `--set` case stay set afterwards, so later cases differ from it by their own edit only.
EDITS = [
    ("nothing", lambda p: None, []),
    ("probe section", lambda p: _sub(p / "pipeline.yaml", "n_inputs: 3", "n_inputs: 2"), ["probe", "evaluate"]),
    ("inputs file", lambda p: _write_inputs(p, 28), ALL),
    ("python teacher's source (a module it imports)", lambda p: (p / "helper.py").write_text("INCLUDE_NAME = False\n"),
     ["generate", "score", "augment", "split", "train", "evaluate"]),
    ("template content", lambda p: _sub(p / "prompt.j2", "Task:", "WITH-NAME Task:"),
     ["generate", "score", "augment", "split", "train", "evaluate"]),
    ("custom check's source",
     lambda p: (p / "checks.py").write_text(CHECKS.replace("return True", 'return "9" not in output_text')),
     NOT_GENERATE),
    ("python judge's source", lambda p: _sub(p / "judge.py", '"score": 5', '"score": 4.5'), NOT_GENERATE),
    # The python judge answers the same under another model name: the stages that ask it re-run, and
    # since the scores come out the same, nothing downstream of them does.
    ("judge's model",
     lambda p: _sub(p / "pipeline.yaml", 'function: "judge:score"', 'function: "judge:score", model: j2'),
     ["probe", "score", "augment", "evaluate"]),
    ("base weights at the same path", lambda p: build_tiny_model(p / "model", seed=1), ["probe", "train", "evaluate"]),
    ("--set train.learning_rate", {"train.learning_rate": 1e-3}, ["train", "evaluate"]),
    ("--force train", "train", ["train", "evaluate"]),
    ("nothing, again", lambda p: None, []),
]


def _outputs(run: Path) -> dict[str, dict[str, str]]:
    return {s: (Manifest.load(run / s).outputs if Manifest.load(run / s) else {}) for s in ALL}


def test_each_edit_reruns_exactly_the_stages_that_depend_on_it(project: Path) -> None:
    first = Pipeline(load_config(project / "pipeline.yaml")).run()
    assert first.ran == ALL
    run_dir = first.run_dir
    overrides: dict = {}
    for what, edit, expected in EDITS:
        force = None
        if isinstance(edit, dict):
            overrides.update(edit)
        elif isinstance(edit, str):
            force = edit
        else:
            edit(project)
        before = _outputs(run_dir)
        result = Pipeline(load_config(project / "pipeline.yaml", overrides)).run(force=force)
        assert result.ran == expected, f"{what}: ran {result.ran}, expected {expected}"
        assert result.skipped == [s for s in ALL if s not in expected], what
        after = _outputs(run_dir)
        for stage in expected if what != "judge's model" else ["evaluate"]:
            assert after[stage] != before[stage], f"{what}: {stage} re-ran but wrote the same outputs"
        if force == "train":  # from scratch: the step count is the configured one, not resumed + more
            train = Manifest.load(run_dir / "train")
            assert train.metrics["global_steps"] == 2
            log = json.loads((run_dir / "train" / "trainer_log.json").read_text())
            assert [e["step"] for e in log if "loss" in e] == [1, 2]


def test_why_a_stage_reruns_is_in_the_event_stream(project: Path) -> None:
    Pipeline(load_config(project / "pipeline.yaml")).run()
    (project / "helper.py").write_text("INCLUDE_NAME = False\n")
    result = Pipeline(load_config(project / "pipeline.yaml")).run(until="generate")
    assert result.ran == ["generate"]
    events = [json.loads(x) for x in (result.run_dir / "events.jsonl").read_text().splitlines()]
    started = [e for e in events if e["type"] == "stage_started" and e["stage"] == "generate"]
    assert started[-1]["why"] == ["code:teacher"]
    assert re.fullmatch(r"[0-9a-f]{12}", started[-1]["run"])


def test_an_openai_teacher_served_by_lorapipe_serve_keys_on_its_model_and_sampling(tmp_path: Path) -> None:
    """A real OpenAI-compatible server (lorapipe's own, on loopback), not the fake: the served model's
    name and the sampling settings are part of generate's key; the same settings replay from the cache."""
    from lorapipe.serve.adapters import DirectoryAdapterSource
    from lorapipe.serve.app import ServeSettings, create_app
    from lorapipe.serve.engine import Engine
    from lorapipe.serve.server import ServerThread
    from lorapipe.testing import build_tiny_adapter

    base = build_tiny_model(tmp_path / "base")
    (tmp_path / "adapters").mkdir()
    build_tiny_adapter(base, tmp_path / "adapters" / "tuned", seed=3)
    _write_inputs(tmp_path, 4)
    engine = Engine.from_spec(str(base), source=DirectoryAdapterSource(tmp_path / "adapters"), base_name="base",
                              batch_window_ms=5)
    with ServerThread(create_app(ServeSettings(watch_interval_s=None), engine)) as srv:
        (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
            task: {{name: served, description: Extract the e-mail., system_prompt: Return the e-mail.}}
            base_model: {base}
            data: {{inputs: inputs.jsonl}}
            teacher: {{kind: openai, base_url: "{srv.url}/v1", model: base, api_key_env: null,
                       max_tokens: 4, temperature: 0, concurrency: 2}}
            """))

        def generate(**overrides: object) -> tuple[list[str], dict]:
            pipe = Pipeline(load_config(tmp_path / "pipeline.yaml", dict(overrides)))
            result = pipe.run(until="generate")
            usage = Manifest.load(result.run_dir / "generate").extra["teacher_usage"]
            return result.ran, usage

        ran, usage = generate()
        assert ran == ["generate"] and usage["calls"] == 4 and usage["cached"] == 0
        assert generate() == ([], usage)  # nothing changed: skipped, not even the cache is asked
        ran, usage = generate(**{"teacher.model": "tuned"})  # another served model
        assert ran == ["generate"] and usage["calls"] == 4 and usage["cached"] == 0
        ran, usage = generate(**{"teacher.model": "tuned", "teacher.temperature": 0.9})  # other sampling
        assert ran == ["generate"] and usage["calls"] == 4
        ran, usage = generate(**{"teacher.model": "tuned"})  # back to settings already asked: the cache answers
        assert ran == ["generate"] and usage["calls"] == 0 and usage["cached"] == 4
