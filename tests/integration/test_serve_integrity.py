"""Adapters that fail their checks are refused with a clear error; the server keeps serving the rest."""

from __future__ import annotations

import json
import shutil

import openai
import pytest
import torch
from safetensors.torch import load_file
from serve_support import MAX_TOKENS, QUESTION, build_world, client, live_server, replace_dir

from lorapipe.manifest import MANIFEST, Manifest
from lorapipe.serve.app import ServeSettings


def corrupt_weights(d):
    with open(d / "adapter_model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00garbage")


def drop_manifest(d):
    (d / MANIFEST).unlink()


def pickle_weights(d):
    torch.save(load_file(d / "adapter_model.safetensors"), d / "adapter_model.bin")
    (d / "adapter_model.safetensors").unlink()
    (d / MANIFEST).unlink()
    Manifest(stage="train", config_hash="x").save(d)


def other_base(d):
    m = json.loads((d / MANIFEST).read_text())
    m["extra"]["base_model"] = {"spec": "some-other-model", "weights_sha256": "0" * 64}
    (d / MANIFEST).write_text(json.dumps(m))


def not_lora(d):
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["peft_type"] = "IA3"
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    (d / MANIFEST).unlink()
    Manifest(stage="train", config_hash="x").save(d)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-integrity"), n_adapters=2)


@pytest.mark.parametrize("damage, message", [
    (corrupt_weights, "adapter_model.safetensors: sha256 mismatch"),
    (drop_manifest, "no manifest.json, so its files cannot be verified"),
    (pickle_weights, "pickle weights can run code when loaded; refusing"),
    (other_base, "trained on base `some-other-model`"),
    (not_lora, "only LoRA adapters (peft_type LORA) are supported"),
])
def test_bad_adapter_is_refused_and_others_keep_serving(world, damage, message):
    bad = world.adapters / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(world.adapters / "ad0", bad)
    damage(bad)
    with live_server(world.engine()) as (srv, app):
        c = client(srv)
        for _ in range(2):  # the second refusal comes from the cache of failures, with the same message
            with pytest.raises(openai.InternalServerError) as err:
                c.chat.completions.create(model="bad", messages=QUESTION, max_tokens=2)
            assert err.value.body["code"] == "adapter_rejected" and message in err.value.body["message"]
        r = c.chat.completions.create(model="ad1", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        assert r.choices[0].message.content.strip() == world.expected[world.fingerprint("ad1")]
        assert "bad" not in app.state.engine.loaded()
    shutil.rmtree(bad)


def test_unverified_adapters_load_when_allowed(world):
    bad = world.adapters / "plain"
    shutil.copytree(world.adapters / "ad0", bad)
    drop_manifest(bad)
    try:
        with live_server(world.engine(require_manifest=False)) as (srv, _):
            r = client(srv).chat.completions.create(model="plain", messages=QUESTION, max_tokens=MAX_TOKENS,
                                                    temperature=0)
            assert r.choices[0].message.content.strip() == world.expected[world.fingerprint("ad0")]
    finally:
        shutil.rmtree(bad)


def test_corrupt_replacement_keeps_the_old_version_serving(world, tmp_path):
    staged = tmp_path / "ad1"
    shutil.copytree(world.adapters / "ad1", tmp_path / "ad1-good")
    good = world.fingerprint("ad1")
    with live_server(world.engine(), ServeSettings(watch_interval_s=3600)) as (srv, app):
        c = client(srv)
        def ask():
            return c.chat.completions.create(model="ad1", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)

        assert ask().system_fingerprint == good
        world.add_version("ad1", seed=555, where=staged)
        corrupt_weights(staged)
        replace_dir(staged, world.adapters / "ad1")
        app.state.watcher.poll()
        r = ask()
        assert r.system_fingerprint == good and r.choices[0].message.content.strip() == world.expected[good]
        # the fixed files are picked up on the next poll
        world.add_version("ad1", seed=556, where=tmp_path / "fixed" / "ad1")
        replace_dir(tmp_path / "fixed" / "ad1", world.adapters / "ad1")
        app.state.watcher.poll()
        r = ask()
        assert r.system_fingerprint == world.fingerprint("ad1") != good
        assert r.choices[0].message.content.strip() == world.expected[r.system_fingerprint]
    replace_dir(tmp_path / "ad1-good", world.adapters / "ad1")
