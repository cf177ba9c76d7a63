"""`predict` and `eval` check adapters as `serve` does, and bad input is one line with exit 2, never a
traceback (issue 19, items 2 and 4). Runs `lorapipe.cli.main` in-process on a tiny random model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorapipe.cli import main
from lorapipe.manifest import MANIFEST, Manifest
from lorapipe.testing import build_tiny_adapter, build_tiny_model

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("cli-integrity")
    build_tiny_adapter(tiny_model_dir, root / "good", seed=3)
    other = build_tiny_model(root / "other-base", hidden_size=48, seed=1)
    build_tiny_adapter(other, root / "foreign", seed=4)
    return root


@pytest.fixture
def project(tmp_path, tiny_model_dir, world):
    rows = [{"messages": [{"role": "user", "content": f"Hi, I am Ann Lee {i}"},
                          {"role": "assistant", "content": '{"name": "Ann Lee"}'}]} for i in range(4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "inputs.jsonl").write_text('{"text": "Hi, I am Bob Ray"}\n')
    (tmp_path / "pipeline.yaml").write_text(textwrap.dedent(f"""\
        # lorapipe predict pipeline.yaml --input inputs.jsonl
        task: {{name: tiny, description: Extract the name., system_prompt: Extract the name as JSON.}}
        base_model: {tiny_model_dir}
        data: {{train_file: rows.jsonl, eval_file: rows.jsonl}}
        evaluate: {{max_inputs: 1, max_new_tokens: 2}}
        """))
    for name in ("good", "foreign"):
        shutil.copytree(world / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def lorapipe(project, monkeypatch, capsys):
    """Run the CLI as a user would; return (exit code, stdout, stderr on one line)."""
    monkeypatch.chdir(project)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lorapipe", *args])
        with pytest.raises(SystemExit) as e:
            main()  # an exception other than LorapipeError would escape here: a traceback
        out = capsys.readouterr()
        err = out.err[out.err.find("error: "):] if "error: " in out.err else out.err  # after library progress bars
        return e.value.code or 0, out.out, " ".join(err.split())

    return run


def flip_a_bit(d: Path) -> None:
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-3] ^= 0x10
    (d / WEIGHTS).write_bytes(bytes(data))


def make_pickled(d: Path) -> None:
    torch.save(load_file(d / WEIGHTS), d / "adapter_model.bin")
    (d / WEIGHTS).unlink()
    (d / MANIFEST).unlink()
    Manifest(stage="train", config_hash="x").save(d)


def truncate_unverified(d: Path) -> None:
    (d / MANIFEST).unlink()
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:-64])


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("adapter, damage, flags, message", [
    ("good", flip_a_bit, [], ("adapter files do not match manifest.json (corrupt or tampered); refusing it: "
                              "adapter_model.safetensors: sha256 mismatch")),
    ("good", make_pickled, [], "adapter_model.bin: pickle weights can run code when loaded; refusing"),
    ("good", truncate_unverified, ["--allow-unverified"], "corrupt adapter weights"),
    ("good", truncate_unverified, [], "no manifest.json, so its files cannot be verified"),
    ("foreign", None, [], "trained on base `{world}/other-base`"),
    ("foreign", lambda d: (d / MANIFEST).unlink(), ["--allow-unverified"],
     "cannot apply the adapter to the base model `{base}`; it was trained on `{world}/other-base`"),
])
def test_bad_adapters_are_refused_in_one_line(lorapipe, project, world, tiny_model_dir, command, adapter, damage,
                                              flags, message):
    if damage is not None:
        damage(project / adapter)
    args = ["--input", "inputs.jsonl"] if command == "predict" else []
    rc, out, err = lorapipe(command, "pipeline.yaml", *args, "--adapter", adapter, *flags)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message.format(world=world, base=tiny_model_dir) in err


def test_the_same_switches_let_trusted_adapters_through(lorapipe, project):
    make_pickled(project / "good")
    rc, out, err = lorapipe("predict", "pipeline.yaml", "--input", "inputs.jsonl", "--adapter", "good",
                            "--allow-pickle", "--max-new-tokens", "2")
    assert rc == 0, err
    assert json.loads(out)["input"] == "Hi, I am Bob Ray"


def _latin1_jsonl(p: Path) -> None:
    p.write_bytes(b'{"text": "ok"}\n{"text": "Caf\xe9 au lait"}\n')


def _utf16_jsonl(p: Path) -> None:
    p.write_text('{"text": "ok"}\n', encoding="utf-16")


def _latin1_csv(p: Path) -> None:
    p.write_bytes(b"id,text\n1,ok\n2,Caf\xe9\n")


@pytest.mark.parametrize("name, write, message", [
    ("latin1.jsonl", _latin1_jsonl, ("latin1.jsonl:2: not UTF-8: byte 0xe9 at column 14 (the file looks like "
                                     "Latin-1/Windows-1252, where it is `é`); re-save it as UTF-8")),
    ("utf16.jsonl", _utf16_jsonl, "utf16.jsonl: the file is UTF-16 (with a byte-order mark); lorapipe reads UTF-8"),
    ("latin1.csv", _latin1_csv, "latin1.csv:3: not UTF-8: byte 0xe9 at column 6"),
    ("long.jsonl", lambda p: p.write_text('{"text": "' + "x" * 3000 + '"}\n{"text": "ok"}\n'),
     "long.jsonl:1: line is 3,013 bytes, more than data.max_line_bytes (2,048)"),
])
def test_unreadable_inputs_name_file_line_and_encoding(lorapipe, project, name, write, message):
    write(project / name)
    rc, _, err = lorapipe("predict", "pipeline.yaml", "--input", name, "--set", "data.max_line_bytes=2048")
    assert rc == 2 and message in err


@pytest.mark.parametrize("args, edit, message", [
    ([], lambda p: p.write_bytes(p.read_bytes() + b"# r\xe9sum\xe9 of the task\n"),
     "pipeline.yaml:6: not UTF-8: byte 0xe9 at column 4"),
    (["--set", "task.name.x=1"], None, "--set task.name.x=...: `task.name` is str 'tiny', not a section"),
    (["--set", "lora.r=[1"], None, "--set 'lora.r=[1': the value is not valid YAML"),
])
def test_config_errors_are_one_line(lorapipe, project, args, edit, message):
    if edit is not None:
        edit(project / "pipeline.yaml")
    rc, _, err = lorapipe("predict", "pipeline.yaml", "--input", "inputs.jsonl", *args)
    assert rc == 2 and message in err


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "the header describes"),
    (lambda f: f.write_bytes(b"\xff" * 64), "but the file has 64; truncated or not safetensors"),
])
def test_corrupt_base_model_weights_are_one_line(lorapipe, project, tiny_model_dir, damage, message):
    base = project / "base"
    shutil.copytree(tiny_model_dir, base)
    damage(base / "model.safetensors")
    rc, _, err = lorapipe("predict", "pipeline.yaml", "--input", "inputs.jsonl", "--set", f"base_model={base}")
    assert rc == 2 and f"error: {base}/model.safetensors: corrupt model weights (" in err and message in err


def test_export_out_dot_is_refused_without_traceback(project, world):
    (project / "notes.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "lorapipe", "export", "--adapter", str(world / "good"), "--out", ".",
                        "--adapter-only"], cwd=project, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--out .: is the current directory or holds it" in " ".join(r.stderr.split())
    assert (project / "notes.txt").read_text() == "mine"
