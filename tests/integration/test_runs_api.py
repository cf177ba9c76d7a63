"""The JSON routes the browser UI calls (/v1/runs, /v1/registry), over real HTTP on a loopback server:
paging 10k rows with filters and search, SSE that resumes with Last-Event-ID, tenant keys, promote."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from serve_support import live_server

from lorapipe.events import EventBus, EventLog
from lorapipe.registry import Registry
from lorapipe.registry.testing import make_run_dir
from lorapipe.serve.app import ServeSettings
from lorapipe.serve.auth import KeyStore
from lorapipe.serve.engine import Engine
from lorapipe.serve.registry_source import RegistryAdapterSource
from lorapipe.testing import build_tiny_adapter

ADMIN, ALICE = "sk-admin-runs-api-01", "sk-alice-runs-api-01"
N = 10_000
ORIGINS = ["teacher", "paraphrase", "edge:short", "edge:adversarial"]


def _row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"message {i} from sender{i}@example.com"},
                         {"role": "assistant", "content": json.dumps({"email": f"sender{i}@example.com"})}],
            "meta": {"id": f"r{i:05d}", "source_id": f"s{i}", "origin": ORIGINS[i % 4], "score": float(i % 6),
                     "subscores": {"rules": float(i % 6)}, "rationale": "zebra" if i % 1000 == 7 else "fine"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("runs-api")
    runs = root / "runs"
    big = runs / "contacts" / "augment"
    big.mkdir(parents=True)
    (big / "augmented.jsonl").write_text("".join(json.dumps(_row(i)) + "\n" for i in range(N)))
    rejected = root / "runs" / "contacts" / "score"
    rejected.mkdir()
    bad = [{**_row(i), "meta": {**_row(i)["meta"], "reasons": [f"{'grounding' if i % 3 else 'format'}: problem {i}"]}}
           for i in range(30)]
    (rejected / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    (runs / "contacts" / "config.json").write_text(json.dumps({"task": {"name": "contacts"}}))
    (runs / "other-task").mkdir()
    (runs / "other-task" / "config.json").write_text("{}")
    (runs / "not-a-run").mkdir()
    reg = Registry(root / "registry")
    for seed in (1, 2):
        adapter = build_tiny_adapter(tiny_model_dir, root / f"a{seed}", seed=seed)
        reg.push("contacts", make_run_dir(root / f"run{seed}", "contacts", seed=seed, adapter_from=adapter))
    reg.promote("contacts@v1", "prod")
    keys = KeyStore.from_dict({"admin_keys": [ADMIN], "keys": {ALICE: {"tenant": "alice", "adapters": ["other-*"]}}})
    engine = Engine.from_spec(str(tiny_model_dir), source=RegistryAdapterSource(reg, root / "cache"),
                              base_name="tiny", batch_window_ms=5)
    with live_server(engine, ServeSettings(keys=keys, runs_dir=runs, watch_interval_s=None)) as (srv, _):
        yield srv, runs


def get(srv, path, key=ADMIN, **kw):
    return httpx.get(srv.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)


def test_lists_only_run_folders_and_tenants_see_their_own(server):
    srv, _ = server
    assert sorted(r["id"] for r in get(srv, "/v1/runs").json()["data"]) == ["contacts", "other-task"]
    assert [r["id"] for r in get(srv, "/v1/runs", ALICE).json()["data"]] == ["other-task"]
    assert get(srv, "/v1/runs/contacts", ALICE).status_code == 404
    r = httpx.get(srv.url + "/v1/runs", timeout=30)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    assert get(srv, "/v1/runs/..%2Fregistry").status_code == 404
    assert get(srv, "/v1/runs/not-a-run").status_code == 404


@pytest.mark.parametrize("query, total, first_id", [
    ("kind=kept&limit=10", N, "r00000"),
    ("kind=kept&offset=9990&limit=50", N, "r09990"),
    ("kind=kept&origin=paraphrase&limit=5", N // 4, "r00001"),
    ("kind=kept&origin=edge:&limit=5", N // 2, "r00002"),
    ("kind=kept&min_score=5&limit=5", N // 6 + (1 if N % 6 > 5 else 0), "r00005"),
    ("kind=kept&q=ZEBRA&limit=5", N // 1000, "r00007"),
    ("kind=kept&q=sender4242@&limit=5", 1, "r04242"),
    ("kind=rejected&reason=format&limit=5", 10, "r00000"),
    ("kind=rejected&reason=grounding&offset=3&limit=5", 20, "r00005"),
])
def test_rows_are_filtered_and_paged_by_the_server(server, query, total, first_id):
    srv, _ = server
    page = get(srv, f"/v1/runs/contacts/rows?{query}").json()
    assert page["total"] == total
    assert page["data"][0]["meta"]["id"] == first_id
    assert len(page["data"]) == min(page["limit"], total - page["offset"])


def test_rows_report_facets_and_refuse_a_bad_kind(server):
    srv, _ = server
    page = get(srv, "/v1/runs/contacts/rows?kind=rejected&limit=1").json()
    assert page["facets"]["reason"] == {"grounding": 20, "format": 10}
    assert page["facets"]["origin"]["teacher"] == 8
    bad = get(srv, "/v1/runs/contacts/rows?kind=everything")
    assert bad.status_code == 400 and "generated, kept, rejected" in bad.json()["error"]["message"]
    assert get(srv, "/v1/runs/contacts/rows?limit=100000").status_code == 400


def test_rows_follow_a_file_that_grows(server):
    srv, runs = server
    path = runs / "other-task" / "generate" / "generated.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(_row(1)) + "\n")
    assert get(srv, "/v1/runs/other-task/rows?kind=generated").json()["total"] == 1
    with open(path, "a") as f:
        f.write(json.dumps(_row(2)) + "\n" + json.dumps(_row(3))[:20])  # the last line is still being written
    assert get(srv, "/v1/runs/other-task/rows?kind=generated").json()["total"] == 2


def _sse(srv, path, headers=None, stop_after=None):
    got = []
    with httpx.stream("GET", srv.url + path, headers={"Authorization": f"Bearer {ADMIN}", **(headers or {})},
                      timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        block: dict = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                block["id"] = int(line[4:])
            elif line.startswith("data: ") and "id" in block:
                got.append((block["id"], json.loads(line[6:])))
                block = {}
                if stop_after and len(got) >= stop_after:
                    break
    return got


def test_events_stream_live_and_resume_after_last_event_id(server):
    srv, runs = server
    log = EventLog(runs / "contacts" / "events.jsonl")
    bus = EventBus()
    log.attach(bus)
    bus.emit("run_started", stages=["train"])
    for step in (1, 2):
        bus.emit("train_metrics", "train", step=step, loss=2.0 / step)
    first = _sse(srv, "/v1/runs/contacts/events?follow=false")
    assert [seq for seq, _ in first] == [1, 2, 3]

    def later():
        time.sleep(0.5)
        bus.emit("train_metrics", "train", step=3, loss=0.5)
        bus.emit("run_finished", ran=["train"], skipped=[], failed={}, seconds=1.0)

    t = threading.Thread(target=later)
    t.start()
    resumed = _sse(srv, "/v1/runs/contacts/events", {"Last-Event-ID": "2"}, stop_after=3)
    t.join()
    log.close()
    assert [(seq, e["type"]) for seq, e in resumed] == [(3, "train_metrics"), (4, "train_metrics"), (5, "run_finished")]
    run = get(srv, "/v1/runs/contacts").json()
    assert run["status"] == "finished" and run["last_seq"] == 5
    assert run["kinds"]["kept"] == N and run["kinds"]["rejected"] == 30


def test_registry_routes_promote_needs_an_admin(server):
    srv, _ = server
    listing = get(srv, "/v1/registry").json()["data"]
    assert [(a["name"], a["versions"], a["aliases"]) for a in listing] == [("contacts", 2, {"prod": "v1"})]
    assert get(srv, "/v1/registry", ALICE).json()["data"] == []
    detail = get(srv, "/v1/registry/contacts").json()
    assert [v["ref"] for v in detail["versions"]] == ["contacts@v1", "contacts@v2"]
    diff = get(srv, "/v1/registry/contacts/diff?a=v1&b=v2").json()
    assert diff["same_content"] is False and diff["files"]["changed"]
    body = {"version": 2, "alias": "prod"}
    denied = httpx.post(srv.url + "/v1/registry/contacts/promote", json=body,
                        headers={"Authorization": f"Bearer {ALICE}"}, timeout=30)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only"
    moved = httpx.post(srv.url + "/v1/registry/contacts/promote", json=body,
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    assert (moved["previous"], moved["target"], moved["changed"]) == (1, 2, True)
    assert get(srv, "/v1/registry/contacts").json()["aliases"] == {"prod": "v2"}
    back = httpx.post(srv.url + "/v1/registry/contacts/rollback", json={"alias": "prod"},
                      headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    assert back["target"] == 1
    again = httpx.post(srv.url + "/v1/registry/contacts/rollback", json={"alias": "prod"},
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert again.status_code == 409 and "no earlier target" in again.json()["error"]["message"]
    assert get(srv, "/v1/registry/nope").status_code == 404


def test_ui_pages_are_the_shell_and_static_files_are_served(server):
    srv, _ = server
    for page in ("/ui/runs", "/ui/data/contacts", "/ui/registry/contacts", "/ui/playground", "/ui/new"):
        r = httpx.get(srv.url + page, timeout=30)
        assert r.status_code == 200 and '<script type="module" src="/ui/static/app.js">' in r.text
    assert httpx.get(srv.url + "/ui", timeout=30, follow_redirects=False).headers["location"] == "/ui/runs"
    js = httpx.get(srv.url + "/ui/static/app.js", timeout=30)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    escape = httpx.get(srv.url + "/ui/static/..%2F__init__.py", timeout=30)  # at most the page shell, never a file
    assert "STATIC" not in escape.text and "<!doctype html>" in escape.text
    assert httpx.get(srv.url + "/ui/static/index.py", timeout=30).status_code == 404
