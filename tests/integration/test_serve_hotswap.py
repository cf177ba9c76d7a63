"""Hot-swap under load: replacing, adding and removing adapters never fails a request, and every answer
comes from the adapter version that request started on (named by `system_fingerprint`)."""

from __future__ import annotations

import shutil
import threading

import httpx
import openai
import pytest
from serve_support import (
    MAX_TOKENS,
    QUESTION,
    build_world,
    client,
    live_server,
    reference_answer,
    replace_dir,
)

from lorapipe.serve.app import ServeSettings

LONG = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve-swap"))


def test_64_clients_over_4_adapters_with_a_replacement_mid_load(world, tmp_path):
    v1 = world.fingerprint("ad1")
    v2_dir = world.add_version("ad1", seed=999, where=tmp_path / "staging" / "ad1")
    v2 = world.fingerprint("ad1", v2_dir)
    assert v1 != v2 and world.expected[v1] != world.expected[v2]
    long_v1 = reference_answer(world.base, world.adapters / "ad1", QUESTION, LONG)
    results: list[tuple[str, bool, str, str]] = []
    errors: list[str] = []
    swapped = threading.Event()
    done = threading.Semaphore(0)

    with live_server(world.engine(max_loaded_adapters=8, max_batch_size=32)) as (srv, _):
        # a long streamed answer holds version 1 while the swap happens
        stream = iter(client(srv).chat.completions.create(model="ad1", messages=QUESTION, max_tokens=LONG,
                                                          temperature=0, stream=True))
        first = next(stream)

        def worker(i: int) -> None:
            c = client(srv)
            for k in range(3):
                name = f"ad{(i + k) % 4}"
                after = swapped.is_set()
                try:
                    r = c.chat.completions.create(model=name, messages=QUESTION, max_tokens=MAX_TOKENS,
                                                  temperature=0)
                    results.append((name, after, r.system_fingerprint, r.choices[0].message.content))
                except Exception as e:  # noqa: BLE001 - every failure is collected and asserted on
                    errors.append(f"{name}: {e!r}")
                done.release()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for _ in range(48):  # a quarter of the requests are answered: swap now, with the rest in flight
            done.acquire()
        r = httpx.post(f"{srv.url}/admin/adapters", json={"name": "ad1", "path": str(v2_dir)}, timeout=60)
        assert r.status_code == 200, r.text
        swapped.set()
        for t in threads:
            t.join(120)
        rest = list(stream)
        after_swap = client(srv).chat.completions.create(model="ad1", messages=QUESTION, max_tokens=MAX_TOKENS,
                                                         temperature=0)

    assert errors == []
    assert len(results) == 64 * 3
    for name, started_after_swap, fingerprint, text in results:
        assert fingerprint.split(":")[0] == name
        assert text.strip() == world.expected[fingerprint], (name, fingerprint)
        if name == "ad1" and started_after_swap:
            assert fingerprint == v2
    assert {fp for name, _, fp, _ in results if name == "ad1"} == {v1, v2}
    # the stream that started before the swap finished on version 1, with its whole answer
    assert first.system_fingerprint == v1 and all(c.system_fingerprint == v1 for c in rest)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices).strip() == long_v1
    assert after_swap.system_fingerprint == v2
    assert after_swap.choices[0].message.content.strip() == world.expected[v2]


def test_directory_watch_replaces_adds_and_removes(world, tmp_path):
    shutil.copytree(world.adapters / "ad2", tmp_path / "ad2-backup")
    settings = ServeSettings(watch_interval_s=3600)  # the test drives the polls itself
    with live_server(world.engine(), settings) as (srv, app):
        c = client(srv)
        def ask(m: str):
            return c.chat.completions.create(model=m, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)

        assert ask("ad2").system_fingerprint == world.fingerprint("ad2")
        # replace ad2's folder in place
        staged = world.add_version("ad2", seed=4242, where=tmp_path / "staging" / "ad2")
        replace_dir(staged, world.adapters / "ad2")
        app.state.watcher.poll()
        r = ask("ad2")
        assert r.system_fingerprint == world.fingerprint("ad2", staged)
        assert r.choices[0].message.content.strip() == world.expected[r.system_fingerprint]
        # a new folder is loaded by the watch, before anyone asks for it
        world.add_version("fresh", seed=77)
        app.state.watcher.poll()
        assert "fresh" in app.state.engine.loaded()
        assert "fresh" in {m.id for m in c.models.list()}
        assert ask("fresh").choices[0].message.content.strip() == world.expected[world.fingerprint("fresh")]
        # a removed folder is unloaded and no longer answered
        shutil.rmtree(world.adapters / "fresh")
        app.state.watcher.poll()
        assert "fresh" not in app.state.engine.loaded()
        with pytest.raises(openai.NotFoundError):
            ask("fresh")
    replace_dir(tmp_path / "ad2-backup", world.adapters / "ad2")


def test_admin_load_and_unload(world, tmp_path):
    outside = world.add_version("extra", seed=31, where=tmp_path / "elsewhere" / "extra")
    with live_server(world.engine()) as (srv, app):
        r = httpx.post(f"{srv.url}/admin/adapters", json={"name": "extra", "path": str(outside)}, timeout=60)
        assert r.status_code == 200 and r.json()["version"] == world.fingerprint("extra", outside).split(":")[1]
        got = client(srv).chat.completions.create(model="extra", messages=QUESTION, max_tokens=MAX_TOKENS,
                                                  temperature=0)
        assert got.choices[0].message.content.strip() == world.expected[world.fingerprint("extra", outside)]
        assert httpx.get(f"{srv.url}/admin/adapters", timeout=30).json()["loaded"]["extra"]
        assert httpx.delete(f"{srv.url}/admin/adapters/extra", timeout=30).status_code == 200
        with pytest.raises(openai.NotFoundError):
            client(srv).chat.completions.create(model="extra", messages=QUESTION, max_tokens=2)
        again = httpx.delete(f"{srv.url}/admin/adapters/extra", timeout=30)
        assert again.status_code == 404 and "not loaded" in again.json()["error"]["message"]
        bad = httpx.post(f"{srv.url}/admin/adapters", json={"name": "x", "path": str(tmp_path / "missing")},
                         timeout=30)
        assert bad.status_code == 400 and "not a PEFT adapter directory" in bad.json()["error"]["message"]
        # the base model object was never replaced: swaps only touch adapter layers
        assert app.state.engine.model is app.state.engine._peft.base_model.model


def test_lru_keeps_at_most_n_adapters_and_still_answers_all(world):
    engine = world.engine(max_loaded_adapters=2)
    with live_server(engine) as (srv, _):
        c = client(srv)
        for _ in range(2):
            for i in range(4):
                r = c.chat.completions.create(model=f"ad{i}", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
                assert r.choices[0].message.content.strip() == world.expected[world.fingerprint(f"ad{i}")]
                assert len(engine.loaded()) <= 2
        metrics = httpx.get(f"{srv.url}/metrics", timeout=30).text
    assert 'lorapipe_adapter_swaps_total{kind="evict"} 6.0' in metrics


def test_registry_source_serves_versions_and_follows_promotions(world, tmp_path):
    from lorapipe.decoding.batch import SamplingParams
    from lorapipe.registry import Registry
    from lorapipe.serve.adapters import AdapterNotFound
    from lorapipe.serve.engine import Engine
    from lorapipe.serve.registry_source import RegistryAdapterSource
    from lorapipe.serve.watch import AdapterWatcher

    v1 = world.add_version("contact", seed=501, where=tmp_path / "v1" / "contact")
    v2 = world.add_version("contact", seed=502, where=tmp_path / "v2" / "contact")
    want = {"contact@v1": world.expected[world.fingerprint("contact", v1)],
            "contact@v2": world.expected[world.fingerprint("contact", v2)]}
    reg = Registry(tmp_path / "registry")
    reg.push("contact", v1)
    reg.push("contact", v2)
    reg.promote("contact@v1", "prod")
    source = RegistryAdapterSource(reg, tmp_path / "cache")
    engine = Engine.from_spec(str(world.base), source=source, base_name=world.base_name).start()
    watcher = AdapterWatcher(engine, source)
    prompt = engine.encode_chat(QUESTION)

    def ask(ref):
        r = engine.generate(ref, prompt, [SamplingParams(max_tokens=MAX_TOKENS, temperature=0)])[0]
        served = r.version.split(":", 1)[1]
        assert r.text.strip() == want[served]
        return served

    try:
        assert [ask(r) for r in ("contact@prod", "contact", "contact@v2", "contact@latest")] == [
            "contact@v1", "contact@v1", "contact@v2", "contact@v2"]
        reg.promote("contact@v2", "prod")
        watcher.poll()  # the alias moved: the loaded `contact@prod` and `contact` are replaced
        assert engine.loaded()["contact@prod"] == "contact@v2"
        assert [ask(r) for r in ("contact@prod", "contact", "contact@v1")] == ["contact@v2", "contact@v2",
                                                                                "contact@v1"]
        with pytest.raises(AdapterNotFound, match="contact@v9"):
            engine.acquire("contact@v9")
    finally:
        engine.shutdown()
