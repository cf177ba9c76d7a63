"""The train stage in a child process (lorapipe.train.child): the same adapter and events as training
in-process, the child's errors raised as the same classes, and no child left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lorapipe.config import load_config
from lorapipe.errors import DataError, LorapipeError
from lorapipe.events import EventBus
from lorapipe.pipeline import Pipeline
from lorapipe.train import child
from tests.integration.test_engine_keys import project  # noqa: F401  (the fixture: a tiny project)

TRAIN_EVENTS = ("progress", "train_metrics", "eval_metrics")


def _train(root: Path, train_process: bool) -> tuple[Path, list[dict]]:
    bus = EventBus()
    seen: list[dict] = []
    bus.subscribe(seen.append)
    result = Pipeline(load_config(root / "pipeline.yaml"), events=bus, train_process=train_process).run()
    assert result.ran[-2:] == ["train", "evaluate"]
    return result.run_dir / "train" / "adapter", [e for e in seen if e.get("stage") == "train"]


def _comparable(events: list[dict]) -> list[tuple]:
    drop = {"seq", "ts", "run", "train_runtime", "train_samples_per_second", "train_steps_per_second",
            "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "seconds", "why"}
    return [(e["type"], tuple(sorted((k, str(v)) for k, v in e.items() if k not in drop)))
            for e in events if e["type"] in TRAIN_EVENTS]


def test_a_child_trains_the_same_adapter_and_relays_the_same_events(project: Path, tmp_path: Path) -> None:  # noqa: F811
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    inline, inline_events = _train(project, train_process=False)
    in_child, child_events = _train(twin, train_process=True)
    a, b = load_file(inline / "adapter_model.safetensors"), load_file(in_child / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "the child trained another adapter"
    assert _comparable(child_events) == _comparable(inline_events)
    assert any(e["type"] == "train_metrics" for e in child_events)
    assert [e["type"] for e in child_events][-1] == "stage_finished"


def _own_rows(root: Path, lines: list[str]) -> Path:
    (root / "train.jsonl").write_text("".join(line + "\n" for line in lines))
    cfg = root / "pipeline.yaml"
    cfg.write_text(cfg.read_text().replace("data: {inputs: inputs.jsonl}",
                                           "data: {train_file: train.jsonl, eval_file: train.jsonl}"))
    return cfg


ROW = json.dumps({"messages": [{"role": "user", "content": "I am Ann Lee"},
                               {"role": "assistant", "content": '{"name": "Ann Lee", "email": null}'}]})


def test_an_error_in_the_child_is_raised_as_the_same_class(project: Path) -> None:  # noqa: F811
    cfg = _own_rows(project, [ROW, "not json"])
    with pytest.raises(DataError, match=r"train\.jsonl:2"):
        Pipeline(load_config(cfg), train_process=True).run(only=["train", "evaluate"])


def test_a_bug_in_the_child_keeps_its_traceback(project: Path) -> None:  # noqa: F811
    cfg = load_config(_own_rows(project, [ROW] * 4))
    object.__setattr__(cfg.lora, "r", "two")  # past validation: PEFT itself fails on it, in the child
    with pytest.raises(Exception) as info:
        child.run(cfg, project / "train.jsonl", None, project / "out", resume=False, bus=EventBus())
    assert not isinstance(info.value, LorapipeError)
    assert "in the training process" in "".join(getattr(info.value, "__notes__", []))


def test_the_child_keeps_the_parents_warning_filters(project: Path, capfd: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """The CLI hides the libraries' FutureWarnings; a spawned interpreter would show them again."""
    cfg = load_config(_own_rows(project, [ROW] * 4))
    for hidden in (False, True):
        with warnings.catch_warnings():
            if hidden:
                warnings.filterwarnings("ignore", category=FutureWarning)
            child.run(cfg, project / "train.jsonl", None, project / f"out-{hidden}", resume=False, bus=EventBus())
        assert ("FutureWarning" in capfd.readouterr().err) is not hidden


def test_a_script_without_a_main_guard_runs_once(project: Path) -> None:  # noqa: F811
    """``Pipeline(cfg).run()`` at the top level of a script: the child must not re-run the script (as
    multiprocessing's spawn would)."""
    script = project / "go.py"
    script.write_text(textwrap.dedent(f"""\
        from lorapipe.config import load_config
        from lorapipe.pipeline import Pipeline
        print("script body ran", flush=True)
        print(Pipeline(load_config({str(project / "pipeline.yaml")!r}), train_process=True).run().ran)
        """))
    r = subprocess.run([sys.executable, str(script)], cwd=project, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("script body ran") == 1 and "'train', 'evaluate']" in r.stdout, r.stdout
