"""Fake run directories for tests of the registry and of servers that read from it (no model needed).

The layout follows a real ``runs/<task>/`` (see :mod:`lorapipe.registry.collect`); the adapter
weights are random bytes unless you pass a real PEFT directory as ``adapter_from``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from lorapipe.manifest import sha256_file


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _row(i: int, tag: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"input {i} {tag}"},
                         {"role": "assistant", "content": f"output {i} {tag}"}],
            "meta": {"id": f"r{i}", "source_id": f"s{i}", "origin": "teacher", "score": 5.0}}


def _manifest(d: Path, stage: str, config: dict[str, Any], inputs: dict[str, str] | None = None,
              metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    outputs = {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob("*"))
               if p.is_file() and p.name != "manifest.json"}
    (d / "manifest.json").write_text(json.dumps({
        "stage": stage, "config_hash": f"cfg-{stage}-{json.dumps(config, sort_keys=True)}"[:64],
        "inputs": inputs or {}, "outputs": outputs, "config": config, "parents": [],
        "metrics": metrics or {}, "extra": extra or {}, "versions": {"lorapipe": "0.1.0", "peft": "0.0"},
        "git_revision": "abc123", "created": "2026-01-01T00:00:00Z"}, indent=2))


def _safetensors_bytes(data: bytes) -> bytes:
    """``data`` as one uint8 tensor in a well-formed safetensors file (what the adapter check reads)."""
    header = json.dumps({"weight": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data


def make_adapter_dir(out: str | Path, *, seed: int = 0, r: int = 8, weights_bytes: int = 2048,
                     base: str = "tiny-llama", eval_loss: float = 1.0) -> Path:
    """A bare adapter directory: adapter_config.json, random 'weights' (a valid safetensors file of random
    bytes) and a manifest.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
        "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}))
    (out / "adapter_model.safetensors").write_bytes(_safetensors_bytes(random.Random(seed).randbytes(weights_bytes)))
    _manifest(out, "train", {"lora": {"r": r}}, metrics={"train_loss": eval_loss + 0.2, "eval_loss": eval_loss},
              extra={"base_model": {"spec": base, "kind": "local", "weights_sha256": "f" * 64}})
    return out


def make_run_dir(base_dir: str | Path, task: str = "contacts", *, seed: int = 0, r: int = 8,
                 train_rows: int = 9, eval_rows: int = 2, eval_loss: float = 1.0, win_rate: float = 0.7,
                 adapter_from: str | Path | None = None, weights_bytes: int = 2048,
                 check_sets: dict[str, float] | None = None) -> Path:
    """Write ``base_dir/runs/<task>/`` with every stage folder, plus ``base_dir/inputs.txt``;
    ``check_sets`` (name -> tuned exact match) adds evaluate.extra_sets results to the metrics."""
    base_dir = Path(base_dir)
    run = base_dir / "runs" / task
    raw = base_dir / "inputs.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("".join(f"input {i}\n" for i in range(train_rows + eval_rows)))
    config = {"task": {"name": task, "description": "Extract contacts.", "system_prompt": "Return JSON.",
                       "format_spec": "{name, email}"},
              "base_model": "tiny-llama", "data": {"inputs": "inputs.txt"},
              "teacher": {"kind": "openai", "model": "gpt-teacher", "base_url": "http://127.0.0.1:9/v1",
                          "few_shot": [{"input": "a", "output": "b"}]},
              "judge": None, "lora": {"r": r, "lora_alpha": 2 * r}, "train": {"learning_rate": 2e-4}}
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config, indent=2))  # what lorapipe.pipeline writes
    (run / "run.json").write_text(json.dumps({"ran": ["generate"], "skipped": []}))
    gen = run / "generate"
    _jsonl(gen / "generated.jsonl", [_row(i, f"s{seed}") for i in range(train_rows + eval_rows)])
    _manifest(gen, "generate", {"teacher": config["teacher"]}, inputs={"inputs": sha256_file(raw)},
              extra={"teacher_usage": {"prompt_tokens": 100, "completion_tokens": 50},
                     "teacher": {"kind": "openai", "model": "gpt-teacher", "base_url": "http://127.0.0.1:9/v1"},
                     "prompt": {"template": "builtin", "example": [{"role": "system", "content": "You write"}]}})
    score = run / "score"
    _jsonl(score / "scored.jsonl", [_row(i, f"s{seed}") for i in range(train_rows + eval_rows)])
    _jsonl(score / "rejected.jsonl", [])
    _manifest(score, "score", {"keep": 4}, metrics={"kept": train_rows + eval_rows},
              extra={"judge": {"kind": "python", "function": "judges:strict"}, "criteria": ["valid JSON"],
                     "judge_usage": {"calls": train_rows + eval_rows}})
    split = run / "split"
    _jsonl(split / "train.jsonl", [_row(i, f"s{seed}") for i in range(train_rows)])
    _jsonl(split / "eval.jsonl", [_row(i, f"s{seed}") for i in range(train_rows, train_rows + eval_rows)])
    _manifest(split, "split", {"eval_fraction": 0.1})
    adapter = run / "train" / "adapter"
    if adapter_from is not None:
        shutil.copytree(adapter_from, adapter, dirs_exist_ok=True)
        _manifest(adapter, "train", {"lora": {"r": r}}, metrics={"eval_loss": eval_loss},
                  extra={"base_model": {"spec": "tiny-llama", "kind": "local", "weights_sha256": "f" * 64}})
    else:
        make_adapter_dir(adapter, seed=seed, r=r, weights_bytes=weights_bytes, eval_loss=eval_loss)
    (run / "train" / "checkpoint-10").mkdir(parents=True, exist_ok=True)
    (run / "train" / "checkpoint-10" / "optimizer.pt").write_bytes(b"\0" * 64)
    (run / "train" / "runs" / "tb").mkdir(parents=True, exist_ok=True)
    (run / "train" / "runs" / "tb" / "events.out.tfevents.1.host").write_bytes(b"tb")
    ev = run / "evaluate"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "report.html").write_text(f"<html><body>win rate {win_rate}</body></html>")
    (ev / "ab.json").write_text(json.dumps({"win_rate": win_rate}))
    sets = {k: {"n": 60, "base_exact_match": 0.05, "tuned_exact_match": v, "base_mean_score": 1.0,
                "tuned_mean_score": 4.5} for k, v in (check_sets or {}).items()}
    _manifest(ev, "evaluate", {"max_new_tokens": 96}, metrics={"win_rate": win_rate, "eval_loss": eval_loss,
                                                             **({"extra_sets": sets} if sets else {})})
    (run / "cache").mkdir(exist_ok=True)
    (run / "cache" / "answers.json").write_text("{}")  # not an answer cache: never stored
    from lorapipe.llm.base import Completion
    from lorapipe.llm.cache import ResponseCache

    ResponseCache(run / "cache").put("k" * 64, Completion(text=f"answer {seed}"))
    return run
