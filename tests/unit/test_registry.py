"""Registry round trips on a local directory and on memory://: push, show, ls, promote, rollback,
diff, pull, verify, content addressing, and the errors a user sees for bad references."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lorapipe.errors import RegistryError
from lorapipe.llm.cache import CACHE_FILE, ResponseCache
from lorapipe.registry import Ref, Registry
from lorapipe.registry.core import blob_key
from lorapipe.registry.testing import make_adapter_dir, make_run_dir


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def _blobs(reg: Registry) -> list[Path]:
    return [p for p in (Path(reg.url) / "blobs").rglob("*") if p.is_file()]


def test_push_run_dir_records_everything(reg: Registry, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a", r=8, train_rows=9, eval_rows=2)
    assert reg.push("contacts", run, message="first") == "contacts@v1"
    rec = reg.show("contacts@v1")
    assert rec["ref"] == "contacts@v1" and rec["message"] == "first" and rec["parent"] is None
    assert rec["source"]["kind"] == "run" and rec["source"]["path"] == str(run)
    assert rec["base_model"] == {"spec": "tiny-llama", "kind": "local", "weights_sha256": "f" * 64}
    assert rec["data"]["train.jsonl"]["rows"] == 9 and rec["data"]["eval.jsonl"]["rows"] == 2
    assert rec["config"]["lora"] == {"r": 8, "lora_alpha": 16}
    assert rec["teacher"] == {"kind": "openai", "model": "gpt-teacher", "base_url": "http://127.0.0.1:9/v1"}
    assert rec["judge"] == {"kind": "python", "function": "judges:strict"}
    assert rec["prompts"]["system_prompt"] == "Return JSON."
    assert rec["prompts"]["generate"]["prompt"]["template"] == "builtin"
    assert rec["prompts"]["score"]["criteria"] == ["valid JSON"]
    assert rec["prompts"]["teacher_few_shot"] == [{"input": "a", "output": "b"}]
    assert rec["usage"] == {"generate": {"teacher_usage": {"prompt_tokens": 100, "completion_tokens": 50}},
                            "score": {"judge_usage": {"calls": 11}}}
    assert rec["metrics"]["train"]["eval_loss"] == 1.0 and rec["metrics"]["evaluate"]["win_rate"] == 0.7
    assert rec["report"] == "report/report.html"
    assert rec["code"]["git_revision"] == "abc123" and rec["pushed_with"]["lorapipe"]
    assert rec["logs"]["tensorboard"] == [str(run / "train" / "runs" / "tb")]
    assert rec["inputs"]["files"]["inputs"]["stored"] == "inputs/inputs.txt"
    assert set(rec["skipped"]) == {"train/checkpoint-10"}
    assert f"cache/{CACHE_FILE}" in rec["files"]  # the teacher answers, as a consistent SQLite snapshot
    pulled = reg.pull("contacts@v1", tmp_path / "pulled", roles=["cache"])
    assert ResponseCache(pulled / "cache").get("k" * 64).text == "answer 0"
    files = rec["files"]
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/manifest.json",
            "data/train.jsonl", "data/eval.jsonl", "data/generate/generated.jsonl", "report/report.html",
            "report/ab.json", "config/config.json", "config/run.json", "inputs/inputs.txt"} <= set(files)
    assert not any("checkpoint" in f or "tfevents" in f or f == "cache/answers.json" for f in files)
    assert rec["aliases"] == []


@pytest.mark.parametrize("where, stored_as", [
    ("config.json", "config/config.json"),  # what lorapipe.pipeline writes
    ("run/config.json", "config/config.json"),
    ("pipeline.yaml", "config/pipeline.yaml"),
])
def test_config_sources(reg: Registry, tmp_path: Path, where: str, stored_as: str) -> None:
    run = tmp_path / "runs" / "t"
    make_adapter_dir(run / "train" / "adapter")
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).write_text("lora:\n  r: 4\n" if where.endswith(".yaml") else '{"lora": {"r": 4}}')
    reg.push("t", run)
    assert reg.record("t")["config"] == {"lora": {"r": 4}}
    assert stored_as in reg.record("t")["files"]


def test_only_train_adapter_is_required(reg: Registry, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "bare-run"
    make_adapter_dir(run / "train" / "adapter")
    reg.push("x", run)
    rec = reg.show("x")
    assert sorted(rec["files"]) == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                                    "adapter/manifest.json"]
    assert rec["data"] == {} and rec["report"] is None and rec["teacher"] is None


def test_bare_adapter_dir(reg: Registry, tmp_path: Path) -> None:
    ad = make_adapter_dir(tmp_path / "ad", r=4)
    assert reg.push("bare", ad) == "bare@v1"
    rec = reg.show("bare")
    assert rec["source"]["kind"] == "adapter" and rec["adapter"]["r"] == 4
    assert rec["metrics"]["train"]["eval_loss"] == 1.0
    out = reg.pull("bare", tmp_path / "out")
    weights = "adapter_model.safetensors"
    assert (out / "adapter" / weights).read_bytes() == (ad / weights).read_bytes()


def test_pull_materialises_and_round_trips(reg: Registry, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a")
    reg.push("contacts", run)
    out = reg.pull("contacts", tmp_path / "pulled")
    config = "adapter_config.json"
    assert (out / "adapter" / config).read_bytes() == (run / "train/adapter" / config).read_bytes()
    assert (out / "data" / "train.jsonl").read_bytes() == (run / "split" / "train.jsonl").read_bytes()
    assert (out / "report" / "report.html").is_file() and (out / "config" / "config.json").is_file()
    assert json.loads((out / "version.json").read_text())["ref"] == "contacts@v1"
    mtime = (out / "version.json").stat().st_mtime_ns
    assert reg.pull("contacts@v1", out) == out and (out / "version.json").stat().st_mtime_ns == mtime  # no-op
    # a pulled directory can be pushed again (e.g. to another registry) with the same content
    other = Registry(tmp_path / "other")
    other.push("copy", out)
    assert other.record("copy")["digest"] == reg.record("contacts")["digest"]
    assert other.record("copy")["data"] == reg.record("contacts")["data"]


def test_pull_roles_and_refuses_foreign_dest(reg: Registry, tmp_path: Path) -> None:
    reg.push("contacts", make_run_dir(tmp_path / "a"))
    out = reg.pull("contacts", tmp_path / "only", roles=["adapter"])
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "version.json"]
    with pytest.raises(RegistryError, match=r"contacts@v1: no files with role weights; it has adapter, cache, config"):
        reg.pull("contacts", tmp_path / "x", roles=["weights"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(RegistryError, match=r"busy: already exists and holds something else than contacts@v1"):
        reg.pull("contacts", busy)
    reg.pull("contacts", busy, overwrite=True)
    assert not (busy / "mine.txt").exists() and (busy / "adapter").is_dir()


def test_content_addressing_shares_blobs(reg: Registry, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a")
    reg.push("contacts", run)
    n = len(_blobs(reg))
    # same run pushed again: a new version, no new blob
    assert reg.push("contacts", run) == "contacts@v2"
    assert len(_blobs(reg)) == n
    # change only the eval loss in the adapter manifest: exactly one new blob
    m = run / "train" / "adapter" / "manifest.json"
    m.write_text(m.read_text().replace('"eval_loss": 1.0', '"eval_loss": 0.5'))
    reg.push("contacts", run)
    assert len(_blobs(reg)) == n + 1
    a, c = reg.record("contacts@v1")["files"], reg.record("contacts@v3")["files"]
    assert a["adapter/adapter_model.safetensors"] == c["adapter/adapter_model.safetensors"]
    sha = a["adapter/adapter_model.safetensors"]
    weights = run / "train/adapter/adapter_model.safetensors"
    assert (Path(reg.url) / blob_key(sha)).read_bytes() == weights.read_bytes()


def test_dedup_returns_identical_latest(reg: Registry, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "a")
    assert reg.push("c", run) == "c@v1"
    assert reg.push("c", run, dedup=True) == "c@v1"
    assert reg.versions("c") == [1]
    # a rerun that skipped every stage rewrites run.json (timings): not a new version
    (run / "run.json").write_text('{"ran": [], "skipped": ["train"], "seconds": {}}')
    assert reg.push("c", run, dedup=True) == "c@v1"
    (run / "split" / "train.jsonl").write_text("{}\n")
    assert reg.push("c", run, dedup=True) == "c@v2"


def test_promote_rollback_and_history(reg: Registry, tmp_path: Path) -> None:
    for i in range(3):
        reg.push("c", make_run_dir(tmp_path / f"r{i}", seed=i))
    assert reg.resolve("c") == Ref("c", 3)  # no prod alias: newest
    reg.promote("c@v1", "prod")
    assert str(reg.resolve("c")) == "c@v1"  # prod alias set: plain name follows it
    assert str(reg.resolve("c@latest")) == "c@v3"
    ev = reg.promote("c@v2", "prod", message="better")
    assert (ev["previous"], ev["target"], ev["changed"]) == (1, 2, True)
    assert reg.promote("c@v2", "prod")["changed"] is False
    reg.promote("c@latest", "prod")
    reg.promote("c@prod", "staging")  # an alias can be promoted from another alias
    assert reg.aliases("c") == {"prod": 3, "staging": 3}
    assert reg.rollback("c", "prod")["target"] == 2
    assert reg.rollback("c", "prod")["target"] == 1
    assert str(reg.resolve("c")) == "c@v1" and reg.show("c@v1")["aliases"] == ["prod"]
    with pytest.raises(RegistryError, match=r"`c@prod` points at v1 and has no earlier target to roll back to"):
        reg.rollback("c", "prod")
    history = reg.alias_history("c", "prod")
    assert [(e["action"], e["target"]) for e in history] == [
        ("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2), ("rollback", 1)]
    assert history[1]["message"] == "better"
    assert reg.ls()[0]["aliases"] == {"prod": "v1", "staging": "v3"}


def test_parent_and_ls(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_run_dir(tmp_path / "a"))
    reg.promote("c@v1", "prod")
    reg.push("c", make_run_dir(tmp_path / "b", seed=1, eval_loss=0.5), message="m2", parent="c@prod")
    rows = reg.ls("c")
    assert [r["ref"] for r in rows] == ["c@v1", "c@v2"]
    assert rows[1]["parent"] == "c@v1" and rows[1]["message"] == "m2" and rows[0]["aliases"] == ["prod"]
    assert rows[1]["metrics"]["train.eval_loss"] == 0.5
    assert reg.ls() == [{"name": "c", "versions": 2, "latest": "c@v2", "default": "c@v1", "aliases": {"prod": "v1"}}]


def test_diff(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_run_dir(tmp_path / "a", r=8, train_rows=9, eval_loss=1.0))
    reg.push("c", make_run_dir(tmp_path / "b", r=16, train_rows=12, eval_loss=0.75))
    d = reg.diff("c@v1", "c@v2")
    assert d["a"] == "c@v1" and d["b"] == "c@v2" and d["same_content"] is False
    cfg = {c["key"]: (c["old"], c["new"]) for c in d["config"]}
    assert cfg == {"lora.r": (8, 16), "lora.lora_alpha": (16, 32)}
    data = {x["file"]: x for x in d["data"]}
    assert (data["train.jsonl"]["old_rows"], data["train.jsonl"]["new_rows"]) == (9, 12)
    assert data["train.jsonl"]["old_sha256"] != data["train.jsonl"]["new_sha256"]
    metrics = {m["key"]: m for m in d["metrics"]}
    assert metrics["train.eval_loss"]["delta"] == pytest.approx(-0.25)
    assert "adapter/adapter_config.json" in d["files"]["changed"]
    same = reg.diff("c@v1", "c@v1")
    assert same["same_content"] and same["config"] == same["data"] == same["metrics"] == []


def test_verify_and_pull_detect_corruption(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_run_dir(tmp_path / "a"))
    assert reg.verify("c") == {"ref": "c@v1", "ok": True, "files": 18, "blobs": 17,
                               "bytes": sum(reg.record("c")["sizes"].values()), "problems": []}
    sha = reg.record("c")["files"]["adapter/adapter_model.safetensors"]
    blob = Path(reg.url) / blob_key(sha)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    res = reg.verify("c@v1")
    bad = hashlib.sha256(b"tampered").hexdigest()[:12]
    assert not res["ok"]
    assert res["problems"] == [f"adapter/adapter_model.safetensors: blob {sha[:12]} is corrupt (hashes to {bad})"]
    with pytest.raises(RegistryError, match=r"c@v1: adapter/adapter_model.safetensors is corrupt in .*"
                                            r"check it with `lorapipe registry verify c@v1`"):
        reg.pull("c", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-pulled
    blob.unlink()
    assert "is missing" in reg.verify("c")["problems"][0]


@pytest.mark.parametrize("ref, message", [
    ("", r"``: empty adapter reference; use NAME, NAME@vN"),
    ("bad name", r"`bad name`: not a valid adapter reference; use NAME, NAME@vN, NAME@latest or NAME@ALIAS"),
    ("c@", r"`c@`: not a valid adapter reference"),
    ("c@v0", r"`c@v0`: versions start at v1"),
    ("c@v9", r"`c@v9`: c has no version v9; it has v1, v2 \(latest v2\)"),
    ("c@staging", r"`c@staging`: c has no alias `staging`; its aliases: prod -> v1"),
    ("c@1x", r"`c@1x`: `1x` is neither a version \(vN\) nor an alias"),
    ("cc", r"`cc`: no adapter named `cc` in .*registry; did you mean `c`\? known: c"),
    ("zzz@prod", r"`zzz@prod`: no adapter named `zzz` in .*; known: c"),
])
def test_bad_refs(reg: Registry, tmp_path: Path, ref: str, message: str) -> None:
    reg.push("c", make_adapter_dir(tmp_path / "a"))
    reg.push("c", make_adapter_dir(tmp_path / "b", seed=1))
    reg.promote("c@v1", "prod")
    with pytest.raises(RegistryError, match=message):
        reg.resolve(ref)


@pytest.mark.parametrize("call, message", [
    (lambda r, p: r.show("c"), r"`c`: the registry .* is empty; push an adapter first"),
    (lambda r, p: r.push("bad/name", p), r"`bad/name`: not a valid adapter name"),
    (lambda r, p: r.push("c", p / "nope"), r"nope: no such directory; pass a run directory"),
    (lambda r, p: r.push("c", p), (r"neither a run directory \(no train/adapter/adapter_config.json\) nor an "
                                  r"adapter directory")),
    (lambda r, p: r.promote("c@v1", "v2"), r"`v2`: not a valid alias; .* `vN` and `latest` are reserved"),
    (lambda r, p: r.rollback("c", "prod"), r"`c@prod`: the registry .* is empty"),
])
def test_bad_operations(reg: Registry, tmp_path: Path, call, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        call(reg, tmp_path)


def test_rollback_unknown_alias(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_adapter_dir(tmp_path / "a"))
    with pytest.raises(RegistryError, match=r"`c@prod`: no such alias; it has no aliases yet; set one with "
                                            r"`lorapipe registry promote c@vN prod`"):
        reg.rollback("c", "prod")


def test_memory_url_round_trip(tmp_path: Path) -> None:
    url = f"memory://{tmp_path.name}/registry"
    reg = Registry(url)
    ref = reg.push("m", make_run_dir(tmp_path / "a"))
    assert ref == "m@v1" and reg.push("m", make_run_dir(tmp_path / "b", seed=2)) == "m@v2"
    reg.promote("m@v1", "prod")
    assert str(Registry(url).resolve("m")) == "m@v1"  # state is in the store
    assert reg.verify("m@v2")["ok"]
    out = reg.pull("m@v2", tmp_path / "out")
    assert (out / "data" / "train.jsonl").is_file()
    assert reg.store.create("versions/m/v1.json", b"{}") is False  # exclusive create refuses


def test_ignores_temp_files_left_by_a_killed_push(reg: Registry, tmp_path: Path) -> None:
    reg.push("c", make_adapter_dir(tmp_path / "a"))
    root = Path(reg.url)
    # what a kill -9 can leave: half-written temp files next to versions, aliases and blobs
    (root / "versions" / "c" / ".v2.json.abc.tmp").write_text('{"half": ')
    (root / "versions" / ".x.tmp").mkdir()
    (root / "blobs" / "sha256" / "00").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / "00" / ".00ab.xyz.tmp").write_bytes(b"partial")
    assert reg.versions("c") == [1] and reg.names() == ["c"]
    assert reg.push("c", make_adapter_dir(tmp_path / "b", seed=3)) == "c@v2"
    assert reg.verify("c@v2")["ok"]


def test_claim_retries_on_conflict(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose listing is stale tries a taken number, loses the exclusive create, takes the next."""
    reg.push("c", make_adapter_dir(tmp_path / "a"))
    first = reg.record("c@v1")["digest"]
    other = Registry(reg.url)
    real = other.versions
    calls = {"n": 0}

    def stale(name: str) -> list[int]:
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(name)

    monkeypatch.setattr(other, "versions", stale)
    assert other.push("c", make_adapter_dir(tmp_path / "b", seed=1)) == "c@v2"
    assert calls["n"] >= 2
    assert Registry(reg.url).record("c@v1")["digest"] == first  # v1 untouched
