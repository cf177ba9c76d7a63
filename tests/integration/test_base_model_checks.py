"""A relative `base_model` is a path next to pipeline.yaml, and a base model that will not load stops
`lorapipe run` before the first (paid) teacher call (issue 19, item 7)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from lorapipe import pipeline
from lorapipe.config import load_config
from lorapipe.errors import ModelError
from lorapipe.models import check_spec

TEACHER = '''
from pathlib import Path

def answer(messages, **params):
    with open(Path(__file__).with_name("calls.txt"), "a") as f:  # every (paid) call leaves a line
        f.write("call\\n")
    return '{"name": "x"}'
'''


def write_project(root: Path, base_model: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "teacher.py").write_text(TEACHER)
    (root / "inputs.jsonl").write_text("".join(json.dumps({"text": f"Hi, I am Ann Lee {i}"}) + "\n"
                                               for i in range(6)))
    (root / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        # lorapipe run pipeline.yaml
        task: {{name: tiny, description: Extract the name., system_prompt: Extract the name as JSON.}}
        base_model: {base_model}
        data: {{inputs: inputs.jsonl}}
        teacher: {{kind: python, function: "teacher:answer"}}
        probe: {{enabled: false}}
        augment: {{enabled: false}}
        lora: {{r: 4, lora_alpha: 8}}
        train: {{max_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 1}}
        """))
    return root / "pipeline.yaml"


def test_relative_base_model_is_next_to_the_config(tmp_path, tiny_model_dir, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(tiny_model_dir, project / "models" / "tiny")
    config = write_project(project, "models/tiny")
    monkeypatch.chdir(tmp_path)  # run from the parent folder: `models/tiny` is not under the cwd
    cfg = load_config(config)
    assert cfg.base_model == str(project / "models" / "tiny")
    assert check_spec(cfg.base_model) == project / "models" / "tiny"
    # the cache key keeps what was written: the same project in another folder is the same config
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(project, moved)
    assert load_config(moved / "pipeline.yaml").section_hash("base_model") == cfg.section_hash("base_model")
    assert load_config(write_project(tmp_path / "p2", "./nowhere")).base_model == str(tmp_path / "p2" / "nowhere")


@pytest.mark.parametrize("base", ["truncated", "relative-missing"])
def test_run_checks_the_base_model_before_any_teacher_call(tmp_path, tiny_model_dir, monkeypatch, base):
    project = tmp_path / "project"
    if base == "truncated":
        shutil.copytree(tiny_model_dir, project / "base")
        weights = project / "base" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1000])
        config, message = write_project(project, "base"), "model.safetensors: corrupt model weights"
    else:
        config, message = write_project(project, "./base"), "is not an embedded alias"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=message):
        pipeline.run(load_config(config))
    assert not (project / "calls.txt").exists()  # no teacher call was paid for
    assert not (project / "runs" / "tiny" / "generate").exists()
