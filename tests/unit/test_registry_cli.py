"""`lorapipe registry ...` end to end: JSON output for scripts, tables for people, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorapipe.cli import app
from lorapipe.registry import Registry
from lorapipe.registry.testing import make_run_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LORAPIPE_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("LORAPIPE_REGISTRY_OPTIONS", raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        res = runner.invoke(app, ["registry", *args])
        if ok:
            assert res.exit_code == 0, (res.output, res.exception)
        return res

    return invoke


def test_push_promote_rollback_diff_json(cli, tmp_path: Path) -> None:
    a, b = make_run_dir(tmp_path / "a", r=8), make_run_dir(tmp_path / "b", r=16, seed=1)
    assert json.loads(cli("push", "contacts", str(a), "-m", "first", "--json").stdout)["ref"] == "contacts@v1"
    out = json.loads(cli("push", "contacts", str(b), "--parent", "contacts@v1", "--promote", "staging",
                         "--json").stdout)
    assert out["ref"] == "contacts@v2" and out["promoted"]["alias"] == "staging"
    assert cli("promote", "contacts@v1", "prod").stdout.strip() == "contacts@prod -> v1 (was nothing)"
    assert cli("promote", "contacts@v2", "prod", "-m", "r16").stdout.strip() == "contacts@prod -> v2 (was v1)"
    assert cli("rollback", "contacts@prod").stdout.strip() == "contacts@prod -> v1 (was v2)"
    listing = json.loads(cli("ls", "--json").stdout)
    assert listing == [{"name": "contacts", "versions": 2, "latest": "contacts@v2", "default": "contacts@v1",
                        "aliases": {"prod": "v1", "staging": "v2"}}]
    versions = json.loads(cli("ls", "contacts", "--json").stdout)
    assert [(v["ref"], v["aliases"], v["parent"]) for v in versions] == [
        ("contacts@v1", ["prod"], None), ("contacts@v2", ["staging"], "contacts@v1")]
    shown = json.loads(cli("show", "contacts", "--json").stdout)
    assert shown["ref"] == "contacts@v1" and shown["message"] == "first"
    diff = json.loads(cli("diff", "contacts@prod", "contacts@staging", "--json").stdout)
    assert {"key": "lora.r", "old": 8, "new": 16} in diff["config"]
    history = json.loads(cli("history", "contacts", "prod", "--json").stdout)
    assert [e["action"] for e in history] == ["promote", "promote", "rollback"] and history[1]["message"] == "r16"
    verified = json.loads(cli("verify", "contacts@v1", "contacts@v2", "--json").stdout)
    assert [v["ok"] for v in verified] == [True, True]


def test_human_output(cli, tmp_path: Path) -> None:
    cli("push", "contacts", str(make_run_dir(tmp_path / "a")))
    cli("promote", "contacts", "prod")
    assert "contacts@v1" in cli("ls").stdout and "prod->v1" in cli("ls").stdout
    shown = cli("show", "contacts@prod").stdout
    assert "contacts@v1" in shown and "base model: tiny-llama" in shown and "train.jsonl" in shown
    assert "contacts@v1: ok (18 files" in cli("verify", "contacts").stdout
    cli("push", "contacts", str(make_run_dir(tmp_path / "b", r=16)))
    d = cli("diff", "contacts@v1", "contacts@v2").stdout
    assert "lora.r" in d and "files: 0 added, 0 removed" in d


def test_check_sets_are_columns_in_show_and_a_drop_is_flagged_in_diff(cli, tmp_path: Path) -> None:
    cli("push", "contacts", str(make_run_dir(tmp_path / "a", check_sets={"unseen": 0.9, "forms": 0.5})))
    cli("push", "contacts", str(make_run_dir(tmp_path / "b", r=16, check_sets={"unseen": 0.8, "forms": 0.6})))
    shown = cli("show", "contacts@v1").stdout
    assert "check sets (evaluate.extra_sets)" in shown and "unseen (60)" in shown and "eval split" in shown
    assert "tuned_exact_match" in shown and "0.9" in shown
    d = json.loads(cli("diff", "contacts@v1", "contacts@v2", "--json").stdout)
    assert d["check_set_drops"] == [{"set": "unseen", "metric": "tuned_exact_match", "old": 0.9, "new": 0.8,
                                     "delta": pytest.approx(-0.1)}]
    human = cli("diff", "contacts@v1", "contacts@v2").stdout
    assert "DROP on check set `unseen`: tuned_exact_match 0.9 -> 0.8 (-0.1)" in human
    assert "`forms`" not in human
    drops = json.loads(cli("diff", "contacts@v2", "contacts@v1", "--json").stdout)["check_set_drops"]
    assert drops[0]["set"] == "forms"
    listed = json.loads(cli("ls", "contacts", "--json").stdout)
    assert listed[1]["metrics"]["evaluate.extra_sets.unseen.tuned_exact_match"] == 0.8


def test_pull(cli, tmp_path: Path) -> None:
    cli("push", "contacts", str(make_run_dir(tmp_path / "a")))
    out = json.loads(cli("pull", "contacts", str(tmp_path / "p"), "--only", "adapter", "--json").stdout)
    assert out == {"ref": "contacts@v1", "dest": str(tmp_path / "p"), "adapter": str(tmp_path / "p" / "adapter")}
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["adapter", "version.json"]
    res = cli("pull", "contacts", str(tmp_path / "a"), ok=False)  # a non-empty foreign directory
    assert res.exit_code == 1 and "already exists and holds something else" in str(res.exception)


def test_verify_exits_1_on_corruption(cli, tmp_path: Path) -> None:
    cli("push", "c", str(make_run_dir(tmp_path / "a")))
    reg = Registry(tmp_path / "registry")
    sha = reg.record("c")["files"]["report/report.html"]
    blob = tmp_path / "registry" / "blobs" / "sha256" / sha[:2] / sha
    blob.chmod(0o644)
    blob.write_text("x")
    res = cli("verify", "c", ok=False)
    assert res.exit_code == 1 and "c@v1: FAILED" in res.stdout and "report/report.html: blob" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "error: `nope`: the registry {reg} is empty; push an adapter first"),
    (["rollback", "c"], "error: `c@prod`: the registry {reg} is empty"),
    (["pull", "c@@", "x"], "error: `c@@`: not a valid adapter reference"),
    (["show", "c@v0"], "error: `c@v0`: versions start at v1"),
    (["promote", "c@v1", "v2"], "error: `v2`: not a valid alias"),
])
def test_ref_errors_are_clean_and_exit_2_like_config_errors(tmp_path: Path, args: list[str], message: str) -> None:
    reg = tmp_path / "registry"
    res = subprocess.run([sys.executable, "-m", "lorapipe.cli", "registry", *args, "--registry", str(reg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2  # bad input, as a bad config is (issue 19)
    assert message.format(reg=reg) in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def test_bad_storage_options_env(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAPIPE_REGISTRY_OPTIONS", "{not json")
    res = cli("ls", ok=False)
    assert "$LORAPIPE_REGISTRY_OPTIONS: not valid JSON" in str(res.exception)
