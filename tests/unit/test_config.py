"""pipeline.yaml validation: every problem reported at once, with line, field path and a hint."""

from __future__ import annotations

import textwrap

import pytest

from lorapipe.config import ALL_PROJECTIONS, load_config
from lorapipe.errors import ConfigError

VALID = """\
task:
  name: demo
  description: Extract the contact.
  system_prompt: Extract the contact as JSON.
data:
  train_file: train.jsonl
"""


def write(tmp_path, text: str):
    p = tmp_path / "pipeline.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_are_the_guides(tmp_path):
    cfg = load_config(write(tmp_path, VALID))
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.lora.lora_dropout, cfg.lora.bias) == (16, 32, 0.05, "none")
    assert cfg.lora.target_modules == ALL_PROJECTIONS
    t = cfg.train
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (3, 4, 4)
    assert (t.learning_rate, t.warmup_ratio, t.lr_scheduler_type) == (2e-4, 0.05, "cosine")
    assert (t.logging_steps, t.eval_steps, t.save_steps, t.load_best_model_at_end) == (10, 50, 50, True)
    assert t.bf16 == "auto"
    assert cfg.base_model == "smollm2-135m-instruct"
    assert (cfg.inference.fast, cfg.inference.weights) == (True, "auto")
    assert cfg.run_dir == tmp_path / "runs" / "demo"
    assert cfg.resolve(cfg.data.train_file) == tmp_path / "train.jsonl"


@pytest.mark.parametrize("extra, expected", [
    ("lora:\n  lora_alhpa: 8\n", "pipeline.yaml:8: lora.lora_alhpa: unknown field; did you mean `lora_alpha`?"),
    ("lora:\n  r: 0\n", "pipeline.yaml:8: lora.r: Input should be greater than 0 (got 0)"),
    ("train:\n  learning_rate: -1\n", "train.learning_rate: Input should be greater than 0 (got -1)"),
    ("train:\n  bf16: maybe\n", "train.bf16:"),
    ("lora:\n  target_modules: []\n", "lora.target_modules: list at least one module name, or use `all-linear`"),
    ("lora:\n  bias: some\n", "lora.bias: Input should be 'none', 'all' or 'lora_only'"),
    ("teacher:\n  kind: openai\n", "teacher: kind `openai` needs `base_url` and `model`"),
    ("teacher:\n  kind: python\n  function: nocolon\n", "teacher: kind `python` needs `function: module:function`"),
    ("evaluat:\n  max_inputs: 3\n", "evaluat: unknown field; did you mean `evaluate`?"),
    ("task2: {}\n", "task2: unknown field; did you mean `task`?"),
    ("evaluate:\n  extra_sets: [{name: a, file: a.jsonl}, {name: a, file: b.jsonl}]\n",
     "evaluate.extra_sets: check-set names must be unique; repeated: a"),
    ("evaluate:\n  extra_sets: [{name: a, fil: a.jsonl}]\n", "evaluate.extra_sets.0.fil: unknown field"),
    ("evaluate:\n  extra_sets: [{name: 'a b', file: a.jsonl}]\n", "evaluate.extra_sets.0.name: String should match"),
    ("inference:\n  weights: int4\n",
     "pipeline.yaml:8: inference.weights: Input should be 'auto', 'bf16', 'fp16', 'fp32' or 'int8'"),
    ("inference:\n  fats: false\n", "inference.fats: unknown field; did you mean `fast`?"),
])
def test_bad_field_messages(tmp_path, extra, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, VALID + extra))
    assert expected in str(e.value)


def test_three_mistakes_reported_in_one_run(tmp_path):
    text = VALID + "lora:\n  lora_alhpa: 8\n  r: -2\ntrain:\n  num_train_epoch: 2\n"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert len(e.value.problems) == 3
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert "lora.lora_alhpa: unknown field; did you mean `lora_alpha`?" in msg
    assert "lora.r: Input should be greater than 0" in msg
    assert "train.num_train_epoch: unknown field; did you mean `num_train_epochs`?" in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize("text, expected", [
    ("task: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("task:\n  name: x\n  description: d\n  system_prompt: s\n",
     "set `data.inputs` (raw inputs for the teacher), `data.train_file`"),
    ("task:\n  name: x\n  description: d\n  system_prompt: s\ndata:\n  inputs: in.jsonl\n",
     "without `data.train_file` a `teacher` is needed"),
    ("task:\n  name: 'bad name!'\n  description: d\n  system_prompt: s\ndata: {train_file: t.jsonl}\n",
     "task.name: String should match pattern"),
    ("task:\n  name: x\n  system_prompt: s\ndata: {train_file: t.jsonl}\n",
     "pipeline.yaml:1: task.description: required field is missing"),
])
def test_bad_files(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert expected in str(e.value)


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="config file not found; pass the path to a pipeline.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_output_schema(tmp_path):
    text = VALID.replace("  system_prompt: Extract the contact as JSON.\n",
                         "  system_prompt: s\n  output_schema: {type: 12}\n")
    with pytest.raises(ConfigError, match="task.output_schema: not a valid JSON Schema"):
        load_config(write(tmp_path, text))


def test_overrides_and_section_hash(tmp_path):
    p = write(tmp_path, VALID)
    a, b = load_config(p), load_config(p, {"train.learning_rate": 1e-3})
    assert b.train.learning_rate == 1e-3
    assert a.section_hash("train") != b.section_hash("train")
    assert a.section_hash("lora") == b.section_hash("lora")


def test_all_linear_and_variants_accepted(tmp_path):
    cfg = load_config(write(tmp_path, VALID + "lora:\n  target_modules: all-linear\n  use_rslora: true\n"
                                             "  use_dora: true\n"))
    assert cfg.lora.target_modules == "all-linear" and cfg.lora.use_rslora and cfg.lora.use_dora


def test_extra_sets_resolve_next_to_the_config(tmp_path):
    cfg = load_config(write(tmp_path, VALID + "evaluate:\n  extra_sets:\n    - {name: unseen, file: unseen.jsonl}\n"))
    assert [(x.name, cfg.resolve(x.file)) for x in cfg.evaluate.extra_sets] == [("unseen", tmp_path / "unseen.jsonl")]
    assert load_config(write(tmp_path, VALID)).evaluate.extra_sets == []
