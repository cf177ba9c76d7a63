"""The lorapipe proxy in front of vLLM, against a fake vLLM on loopback (tests/fakes/openai_server.py
plus vLLM's runtime LoRA endpoints): keys and tenants, name mapping, hot-swap calls, SSE relay."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from lorapipe.serve.adapters import DirectoryAdapterSource, content_version
from lorapipe.serve.auth import KeyStore
from lorapipe.serve.server import ServerThread
from lorapipe.serve.vllm_proxy import ProxySettings, create_proxy_app
from lorapipe.testing import build_tiny_adapter, build_tiny_model
from tests.fakes.openai_server import FakeOpenAI, _Handler

pytestmark = pytest.mark.timeout(120)

BASE = "tiny-base"
ADMIN, ALICE, BOB = "sk-admin-0123456789", "sk-alice-0123456789", "sk-bob-0123456789"
KEYS = {"admin_keys": [ADMIN],
        "keys": {ALICE: {"tenant": "alice", "adapters": ["ad0", "ad1"]},
                 BOB: {"tenant": "bob", "adapters": ["ad1"], "base": False}}}


class _VllmHandler(_Handler):
    """vLLM's runtime LoRA routes and /health on top of the fake's chat completions."""

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        else:
            super().do_GET()

    def do_POST(self) -> None:
        fake: FakeVllm = self.server.fake
        if self.path not in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            return super().do_POST()
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        name = body["lora_name"]
        with fake.lock:
            fake.calls.append((self.path.rsplit("/", 1)[-1], name, body.get("lora_path"), time.monotonic()))
            if self.path.endswith("/load_lora_adapter"):
                if name in fake.loras:
                    return self._error(400, f"The lora adapter '{name}' has already been loaded.", "BadRequestError")
                fake.loras[name] = body["lora_path"]
                return self._send(200, f"Success: LoRA adapter '{name}' added successfully.".encode(),
                                  content_type="text/plain")
            if fake.loras.pop(name, None) is None:
                return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            return self._send(200, f"Success: LoRA adapter '{name}' removed successfully.".encode(),
                              content_type="text/plain")


class FakeVllm(FakeOpenAI):
    """Answers `[<model>] echo: <question>` and refuses (500) a model that is neither base nor a loaded LoRA."""

    def __init__(self, loras: dict[str, str], **kw):
        super().__init__(responder=self._answer, models=[BASE], **kw)
        self._server.RequestHandlerClass = _VllmHandler
        self.lock = threading.Lock()
        self.loras = dict(loras)
        self.calls: list[tuple[str, str, str | None, float]] = []  # (load|unload, name, path, when)

    def _answer(self, body: dict) -> str:
        with self.lock:
            if body["model"] != BASE and body["model"] not in self.loras:
                raise LookupError(f"model {body['model']} is not loaded")
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        return f"[{body['model']}] echo: {users[-1]}"

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def lora_calls(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(kind, name) for kind, name, *_ in self.calls]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vllm-proxy")
    base = build_tiny_model(root / BASE)
    for i, name in enumerate(("ad0", "ad1", "spare")):
        build_tiny_adapter(base, root / "built" / name, seed=10 + i)
    return base, root / "built"


@pytest.fixture()
def world(tiny, tmp_path):
    """A fake vLLM started with ad0 and ad1, and the proxy in front of it (keys on)."""
    _, built = tiny
    adapters = tmp_path / "adapters"
    for name in ("ad0", "ad1"):
        shutil.copytree(built / name, adapters / name)
    preloaded = {n: content_version(adapters / n) for n in ("ad0", "ad1")}
    with FakeVllm({n: str(adapters / n) for n in preloaded}, latency_s=0.0) as fake:
        settings = ProxySettings(upstream=fake.root, base_name=BASE, keys=KeyStore.from_dict(KEYS),
                                 max_lora_rank=16, resolve_ttl_s=0.0)
        app = create_proxy_app(settings, source=DirectoryAdapterSource(adapters), preloaded=preloaded)
        with ServerThread(app) as srv:
            yield srv, fake, adapters


def _chat(srv, key: str | None, model: str, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{srv.url}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body})


@pytest.mark.parametrize("key,model,status,code", [
    (None, "ad0", 401, "invalid_api_key"),
    ("sk-wrong-000000000000", "ad0", 401, "invalid_api_key"),
    (BOB, "ad0", 403, "model_not_allowed"),       # another tenant's adapter
    (BOB, BASE, 403, "model_not_allowed"),        # bob may not call the bare base
    (ALICE, "ad0", 200, None),
    (ALICE, "ad1@v3", 404, "model_not_found"),    # allowed family, but no such version in the folder
    (BOB, "ad1", 200, None),
    (ADMIN, "nope", 404, "model_not_found"),
    (ALICE, BASE, 200, None),
])
def test_tenant_keys(world, key, model, status, code):
    srv, fake, _ = world
    r = _chat(srv, key, model)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
    else:
        assert r.json()["choices"][0]["message"]["content"] == f"[{model}] echo: hi"
    assert fake.count("ok") == (1 if status == 200 else 0)  # refused requests never reach vLLM


@pytest.mark.parametrize("key,method,path,body,status", [
    (ALICE, "POST", "/admin/adapters", {"name": "x", "path": "/tmp"}, 403),
    (ALICE, "DELETE", "/admin/adapters/ad0", None, 403),
    (ALICE, "GET", "/admin/adapters", None, 403),
    (None, "GET", "/admin/adapters", None, 401),
    (ADMIN, "GET", "/admin/adapters", None, 200),
])
def test_admin_api_needs_an_admin_key(world, key, method, path, body, status):
    srv, fake, _ = world
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.request(method, srv.url + path, headers=headers, json=body, timeout=30)
    assert r.status_code == status, r.text
    assert fake.lora_calls() == []


def test_models_lists_what_the_tenant_may_use(world):
    srv, _, _ = world
    def ids(key: str) -> list[str]:
        return [m.id for m in OpenAI(base_url=f"{srv.url}/v1", api_key=key).models.list().data]
    assert ids(ALICE) == [BASE, "ad0", "ad1"]
    assert ids(BOB) == ["ad1"]


def test_openai_client_streams_through_the_proxy(world):
    srv, _, _ = world
    client = OpenAI(base_url=f"{srv.url}/v1", api_key=ALICE)
    stream = client.chat.completions.create(model="ad1", messages=[{"role": "user", "content": "stream me please"}],
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "[ad1] echo: stream me please"


def test_sse_bytes_are_relayed_unchanged(world):
    srv, fake, _ = world
    headers = {"Authorization": f"Bearer {ALICE}"}
    body = {"model": "ad0", "messages": [{"role": "user", "content": "a b c"}], "stream": True}
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", headers=headers, json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes())
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "ad0" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "[ad0] echo: a b c"
    assert fake.log[-1].body["stream"] is True


def test_admin_hot_swap_becomes_vllm_load_and_unload(world, tiny):
    srv, fake, _ = world
    _, built = tiny
    admin = {"Authorization": f"Bearer {ADMIN}"}
    new = built / "spare"
    version = content_version(new)
    r = httpx.post(f"{srv.url}/admin/adapters", headers=admin, json={"name": "ad0", "path": str(new)}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "ad0", "version": version, "loaded": True, "upstream_name": f"ad0@{version}"}
    # the new version is loaded under its own name, then the old one leaves vLLM (nothing was running on it)
    assert fake.lora_calls() == [("load_lora_adapter", f"ad0@{version}"), ("unload_lora_adapter", "ad0")]
    assert fake.calls[0][2] == str(new)
    assert _chat(srv, ALICE, "ad0").json()["choices"][0]["message"]["content"] == f"[ad0@{version}] echo: hi"

    r = httpx.delete(f"{srv.url}/admin/adapters/ad0", headers=admin, timeout=30)
    assert r.status_code == 200 and r.json() == {"name": "ad0", "loaded": False}
    assert fake.lora_calls()[-1] == ("unload_lora_adapter", f"ad0@{version}")
    assert set(fake.loras) == {"ad1"}


def test_admin_refuses_an_adapter_larger_than_vllms_max_rank(world, tiny, tmp_path):
    srv, fake, _ = world
    base, _ = tiny
    big = build_tiny_adapter(base, tmp_path / "big", r=32)
    r = httpx.post(f"{srv.url}/admin/adapters", headers={"Authorization": f"Bearer {ADMIN}"},
                   json={"name": "big", "path": str(big)}, timeout=30)
    assert r.status_code == 400
    assert "LoRA rank 32 exceeds --max-lora-rank 16" in r.json()["error"]["message"]
    assert fake.lora_calls() == []


def test_changed_folder_is_loaded_as_a_new_version(world, tiny):
    srv, fake, adapters = world
    _, built = tiny
    shutil.rmtree(adapters / "ad1")
    shutil.copytree(built / "spare", adapters / "ad1")
    version = content_version(adapters / "ad1")
    r = _chat(srv, BOB, "ad1")
    assert r.json()["choices"][0]["message"]["content"] == f"[ad1@{version}] echo: hi"
    assert fake.lora_calls() == [("load_lora_adapter", f"ad1@{version}"), ("unload_lora_adapter", "ad1")]
    assert _chat(srv, BOB, "ad1").status_code == 200 and len(fake.lora_calls()) == 2  # unchanged: no new calls


def test_removed_folder_is_404_and_leaves_vllm(world):
    srv, fake, adapters = world
    shutil.rmtree(adapters / "ad1")
    r = _chat(srv, BOB, "ad1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert fake.lora_calls() == [("unload_lora_adapter", "ad1")]
    assert _chat(srv, ALICE, "ad0").status_code == 200  # the others are untouched


def test_old_version_is_unloaded_only_after_its_running_request(world, tiny):
    srv, fake, _ = world
    _, built = tiny
    fake.latency_s = lambda body: 1.0 if body["messages"][-1]["content"] == "slow" else 0.0
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=_chat(srv, ALICE, "ad0", messages=[
        {"role": "user", "content": "slow"}])))
    t.start()
    deadline = time.monotonic() + 30
    while fake.count("pending") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = httpx.post(f"{srv.url}/admin/adapters", headers={"Authorization": f"Bearer {ADMIN}"},
                   json={"name": "ad0", "path": str(built / "spare")}, timeout=30)
    assert r.status_code == 200
    assert [k for k, _ in fake.lora_calls()] == ["load_lora_adapter"]  # ad0 still answers the slow request
    t.join(30)
    assert result["r"].json()["choices"][0]["message"]["content"] == "[ad0] echo: slow"
    deadline = time.monotonic() + 10
    while len(fake.lora_calls()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.lora_calls()[-1] == ("unload_lora_adapter", "ad0")
    slow_end = next(e.t_end for e in fake.log if e.last_user == "slow")
    assert fake.calls[-1][3] >= slow_end


def test_upstream_down_is_a_502(tiny, tmp_path):
    settings = ProxySettings(upstream="http://127.0.0.1:9", base_name=BASE)  # port 9: nothing listens
    with ServerThread(create_proxy_app(settings)) as srv:
        r = _chat(srv, None, BASE)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        assert httpx.get(f"{srv.url}/health", timeout=30).status_code == 503
