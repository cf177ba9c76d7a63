"""Tenants: API keys, per-tenant adapters, filtered model lists, admin-only routes."""

from __future__ import annotations

import httpx
import openai
import pytest
import yaml
from serve_support import QUESTION, build_world, client, live_server

from lorapipe.errors import ConfigError
from lorapipe.serve.app import ServeSettings
from lorapipe.serve.auth import KeyStore
from lorapipe.serve.server import is_loopback

ADMIN, ALICE, BOB = "sk-admin-0123456789", "sk-alice-0123456789", "sk-bob-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-tenants")
    world = build_world(root, n_adapters=3)
    keys = root / "keys.yaml"
    keys.write_text(yaml.safe_dump({
        "admin_keys": [ADMIN],
        "keys": {ALICE: {"tenant": "alice", "adapters": ["ad0", "ad1"]},
                 BOB: {"tenant": "bob", "adapters": ["ad2"], "base": False}}}))
    settings = ServeSettings(keys=KeyStore.load(keys), watch_interval_s=None)
    with live_server(world.engine(), settings) as (srv, _):
        yield srv, world


def ask(srv, key, model):
    return client(srv, key).chat.completions.create(model=model, messages=QUESTION, max_tokens=2)


@pytest.mark.parametrize("key, model, error, message", [
    (None, "ad0", openai.AuthenticationError, "missing API key"),
    ("sk-wrong-0123456789", "ad0", openai.AuthenticationError, "incorrect API key"),
    (ALICE, "ad2", openai.PermissionDeniedError, "tenant `alice` may not use model `ad2`"),
    (ALICE, "does-not-exist", openai.PermissionDeniedError, "may not use model `does-not-exist`"),
    (BOB, "ad0", openai.PermissionDeniedError, "tenant `bob` may not use model `ad0`"),
    (BOB, "base", openai.PermissionDeniedError, "tenant `bob` may not use model"),
    (ALICE, "ad0@v3", openai.NotFoundError, "adapter `ad0@v3` not found"),  # her family: 404, not 403
])
def test_refusals(server, key, model, error, message):
    srv, world = server
    model = world.base_name if model == "base" else model
    if key is None:  # the client insists on a key; send the request without the header
        r = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": model, "messages": QUESTION}, timeout=30)
        assert r.status_code == 401 and message in r.json()["error"]["message"]
        return
    with pytest.raises(error) as err:
        ask(srv, key, model)
    assert message in err.value.body["message"]


@pytest.mark.parametrize("key, model", [(ALICE, "ad0"), (ALICE, "ad1"), (ALICE, "base"), (BOB, "ad2"),
                                        (ADMIN, "ad2"), (ADMIN, "base")])
def test_allowed(server, key, model):
    srv, world = server
    model = world.base_name if model == "base" else model
    assert ask(srv, key, model).model == model


@pytest.mark.parametrize("key, visible", [
    (ALICE, {"base", "ad0", "ad1"}), (BOB, {"ad2"}), (ADMIN, {"base", "ad0", "ad1", "ad2"})])
def test_models_list_only_the_tenants_adapters(server, key, visible):
    srv, world = server
    ids = {m.id for m in client(srv, key).models.list()}
    assert ids == {world.base_name if v == "base" else v for v in visible}


@pytest.mark.parametrize("method, path, key, status", [
    ("GET", "/admin/adapters", ALICE, 403), ("GET", "/admin/adapters", ADMIN, 200),
    ("DELETE", "/admin/adapters/ad0", BOB, 403), ("GET", "/metrics", ALICE, 403), ("GET", "/metrics", ADMIN, 200),
    ("GET", "/metrics", None, 401), ("GET", "/health", None, 200),
])
def test_admin_routes_need_an_admin_key(server, method, path, key, status):
    srv, _ = server
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.request(method, f"{srv.url}{path}", headers=headers, timeout=30)
    assert r.status_code == status
    if status == 403:
        assert "may not use the admin API" in r.json()["error"]["message"]


@pytest.mark.parametrize("data, message", [
    ({"keys": {ALICE: {"tenant": "a", "adapterz": []}}}, "adapterz: Extra inputs are not permitted"),
    ({"keys": {"short": {"tenant": "a"}}}, "shorter than 12 characters"),
    ({"admin_keys": [ADMIN], "keys": {ADMIN: {"tenant": "a"}}}, "listed twice"),
    ({}, "no keys"),
    ({"admin": [ADMIN]}, "admin: Extra inputs are not permitted"),
])
def test_bad_keys_files(tmp_path, data, message):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        KeyStore.load(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_open_server_warning_is_for_non_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback
