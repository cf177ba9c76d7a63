"""The browser UI in a real browser (Debian's Chromium driven by Playwright, no browser download) against a
live server: a tiny model, a real pipeline run, a registry. Every page is opened at 1280 and 390 px and
screenshotted (``LORAPIPE_UI_ARTIFACTS``, default the test's tmp dir; ``LORAPIPE_UI_SCREENSHOTS=docs/ui``
also writes the README's pictures); a console error or page error fails the test."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
from ui_support import ADAPTER, ADMIN_KEY, build_ui_world, make_app

from lorapipe.events import EventBus, EventLog
from lorapipe.serve.server import ServerThread

CHROMIUM = os.environ.get("LORAPIPE_CHROMIUM", "/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the `test` extra)")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                                       "or set LORAPIPE_CHROMIUM)")
WIDTHS = (1280, 390)
SET_KEY = "try { sessionStorage.setItem('lorapipe.key', %r) } catch (e) {}"  # also runs in the report's iframe


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    return build_ui_world(tmp_path_factory.mktemp("ui-world"), tiny_model_dir)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    import httpx

    with ServerThread(make_app(world, tmp_path_factory.mktemp("ui-cache"))) as srv:
        # the runs page also lists fine-tuning jobs: the server under test must have that API
        assert "/v1/fine_tuning/jobs" in httpx.get(f"{srv.url}/openapi.json", timeout=30).text
        yield srv


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    out = Path(os.environ.get("LORAPIPE_UI_ARTIFACTS") or tmp_path / "ui-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


class Tab:
    """A page with the key set, whose console errors and page errors are collected."""

    def __init__(self, browser, server, width: int, key: str | None = ADMIN_KEY):
        self.ctx = browser.new_context(viewport={"width": width, "height": 900})
        if key:
            self.ctx.add_init_script(SET_KEY % key)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(30_000)
        self.base, self.width, self.errors = server.url, width, []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, path: str):
        self.page.goto(self.base + path)
        return self.page

    def shot(self, artifacts: Path, name: str) -> None:
        self.page.wait_for_timeout(300)  # the last frame of an animation-free page: layout is done
        png = artifacts / f"{name}-{self.width}.png"
        self.page.screenshot(path=str(png), full_page=self.width != 1280)
        readme = os.environ.get("LORAPIPE_UI_SCREENSHOTS")
        if readme:  # the README's pictures: what a screen shows first, small files
            Path(readme).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(readme) / png.name), full_page=False)

    def close(self, allowed: str | None = None) -> None:
        self.ctx.close()
        errors = [e for e in self.errors if not (allowed and re.search(allowed, e))]
        assert not errors, errors


@pytest.fixture
def tabs(browser, server):
    opened: list[Tab] = []

    def make(width: int, key: str | None = ADMIN_KEY) -> Tab:
        opened.append(Tab(browser, server, width, key))
        return opened[-1]

    yield make
    for t in opened:
        t.close(getattr(t, "allowed", None))


def test_the_key_is_asked_once_and_kept_for_the_session(tabs, server):
    tab = tabs(1280, key=None)
    tab.allowed = "status of 401"  # the first calls without a key are refused: that is how the UI knows to ask
    page = tab.open("/ui/runs")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    page.fill("#key-input", "sk-wrong-key-000000")
    page.click("#key-form button[value=save]")
    page.wait_for_selector("#key-error:has-text('incorrect API key')")
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-form button[value=save]")
    page.wait_for_selector(f"a[href='/ui/runs/{ADAPTER}']")
    page.click("a[data-nav=registry]")  # another page, same tab: no second prompt
    page.wait_for_selector("#served td.alias-target")
    assert not dialog.is_visible()


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_page_lists_the_run_with_its_stages(tabs, artifacts, width):
    tab = tabs(width)
    page = tab.open("/ui/runs")
    row = page.locator("tr", has=page.locator(f"a[href='/ui/runs/{ADAPTER}']"))
    row.locator(".badge.finished").wait_for()
    assert row.locator(".chip.ran").count() == 7  # probe ... evaluate, all ran
    tab.shot(artifacts, "runs")
    page.click(f"a[href='/ui/runs/{ADAPTER}']")
    page.wait_for_selector("#curve-count:has-text('4 train points')")
    assert page.frame_locator("iframe.report").locator("text=base vs tuned").count() == 1
    assert page.locator("text=config.json (resolved)").count() == 1
    tab.shot(artifacts, "run")


def test_live_curve_gains_points_and_a_reload_resumes_without_repeats(tabs, world, artifacts):
    live = world.runs / "live-run"
    log = EventLog(live / "events.jsonl")
    bus = EventBus()
    log.attach(bus)
    bus.emit("run_started", stages=["train", "evaluate"])
    bus.emit("stage_started", "train", why=["no finished run"])
    for step in range(1, 4):
        bus.emit("train_metrics", "train", step=step, total_steps=12, loss=3.0 / step)
    tab = tabs(1280)
    page = tab.open("/ui/runs/live-run")
    page.wait_for_selector("#curve-count:has-text('3 train points')")
    page.evaluate("""() => { window.__shift = 0; new PerformanceObserver(list => { for (const e of list.getEntries())
        if (!e.hadRecentInput) window.__shift += e.value; }).observe({ type: 'layout-shift' });
        window.__seen = []; const c = document.getElementById('curve-count');
        new MutationObserver(() => window.__seen.push(parseInt(c.textContent))).observe(c, { childList: true }); }""")

    def train(steps: range, delay: float) -> None:
        for step in steps:
            time.sleep(delay)
            bus.emit("progress", "train", phase="train: steps", n=step, total=12)
            bus.emit("train_metrics", "train", step=step, total_steps=12, loss=3.0 / step)
            if step % 3 == 0:
                bus.emit("eval_metrics", "train", step=step, eval_loss=3.2 / step)

    t = threading.Thread(target=train, args=(range(4, 8), 0.4))
    t.start()
    t.join()
    page.wait_for_selector("#curve-count:has-text('7 train points, 1 eval points')")
    seen = page.evaluate("window.__seen")
    assert {4, 5, 6} & set(seen), seen  # the curve grew while training ran, not only at the end
    assert page.locator(".chart svg").get_attribute("data-points") == "8"
    assert page.evaluate("window.__shift") < 0.01  # numbers streamed in, nothing moved
    tab.shot(artifacts, "run-live")

    page.reload()
    page.wait_for_selector("#curve-count:has-text('7 train points, 1 eval points')")
    train(range(8, 13), 0)
    bus.emit("stage_finished", "train", seconds=3.0, metrics={})
    bus.emit("run_finished", ran=["train"], skipped=[], failed={}, seconds=3.0)
    page.wait_for_selector("#run-status .badge.finished")
    page.wait_for_selector("#curve-count:has-text('12 train points, 3 eval points')")  # none twice, none lost
    log.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_data_review_filters_searches_and_pages(tabs, server, artifacts, width):
    import httpx

    def total(query: str) -> int:
        r = httpx.get(f"{server.url}/v1/runs/{ADAPTER}/rows?{query}", timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        return r.json()["total"]

    tab = tabs(width)
    page = tab.open(f"/ui/data/{ADAPTER}")
    kept = total("kind=kept")
    page.wait_for_selector(f"#rows-status:has-text('of {kept} kept')")
    assert page.locator(".row-card").count() == min(25, kept)
    assert page.locator(".row-card .score").first.inner_text().startswith("score ")
    tab.shot(artifacts, "data")
    page.select_option("#f-origin", "paraphrase")
    page.wait_for_selector(f"#rows-status:has-text('of {total('kind=kept&origin=paraphrase')} kept')")
    assert set(page.locator(".row-card .badge.origin").all_inner_texts()) == {"paraphrase"}
    page.fill("#f-q", "Bob Ray")
    n = total("kind=kept&origin=paraphrase&q=bob%20ray")
    page.wait_for_selector(f"#rows-status:has-text('of {n} kept')")
    assert all("Bob Ray" in t for t in page.locator(".row-card .io").all_inner_texts())
    page.fill("#f-q", "")
    page.select_option("#f-origin", "")
    page.click(".tabs button:has-text('rejected')")
    rejected = total("kind=rejected")
    page.wait_for_selector(f"#rows-status:has-text('of {rejected} rejected')")
    page.select_option("#f-reason", "duplicate")
    page.wait_for_selector(f"#rows-status:has-text('of {total('kind=rejected&reason=duplicate')} rejected')")
    assert page.locator(".row-card .reasons li").first.inner_text().startswith("duplicate:")
    page.click(".tabs button:has-text('kept')")
    # the kept list's own status: the rejected list's "Rows 1–25 of N rejected" also reads "Rows 1–25"
    page.wait_for_selector(f"#rows-status:has-text('Rows 1–25 of {kept} kept')")
    page.click("#next-page")
    page.wait_for_selector(f"#rows-status:has-text('Rows 26–{min(50, kept)} of {kept}')")
    assert "offset=25" in page.url  # a reload or a shared link opens the same page of rows


@pytest.mark.parametrize("width", WIDTHS)
def test_playground_streams_two_models_side_by_side(tabs, world, artifacts, width):
    tab = tabs(width)
    page = tab.open("/ui/playground")
    page.wait_for_selector("#p-prompt")
    for box in page.locator("fieldset.models input").all():
        box.uncheck()
    page.check(f"fieldset.models input[value='{world.base.name}']")
    page.check(f"fieldset.models input[value='{ADAPTER}@v2']")
    page.fill("#p-prompt", "Hi, I'm Ann Lee, reach me at ann.lee@example.com")
    page.fill("#p-max-tokens", "12")
    page.click("#p-send")
    outs = page.locator(".out")
    outs.nth(1).wait_for()
    assert outs.count() == 2
    page.wait_for_function("document.querySelectorAll('.out .badge.ran').length === 2")
    texts = [outs.nth(i).locator(".answer").inner_text() for i in range(2)]
    assert all(texts) and texts[0] != texts[1]  # both streamed, and the adapter changes the answer
    for i in range(2):
        assert re.fullmatch(r"\d+(\.\d)?", outs.nth(i).locator(".stats .num").nth(1).inner_text())  # tokens/s
    assert page.locator("#p-send").is_enabled()
    tab.shot(artifacts, "playground")


@pytest.mark.parametrize("width", WIDTHS)
def test_registry_shows_versions_and_diff(tabs, artifacts, width):
    tab = tabs(width)
    page = tab.open(f"/ui/registry/{ADAPTER}")
    page.wait_for_selector("tr[data-version='2']")
    page.click("#diff button[type=submit]")
    page.wait_for_selector("#diff-out:has-text('Different adapter content')")
    tab.shot(artifacts, "registry")


def test_promote_with_confirmation_moves_the_served_alias(tabs, server, world):
    import openai

    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=120)
    msg = [{"role": "user", "content": "hello"}]
    sdk.chat.completions.create(model=f"{ADAPTER}@prod", messages=msg, max_tokens=2)  # load prod = v1
    tab = tabs(1280)
    page = tab.open(f"/ui/registry/{ADAPTER}")
    prod = page.locator(f"#served tr[data-model='{ADAPTER}@prod']")
    prod.locator("text=v1").first.wait_for()
    prod.locator(f"text={ADAPTER}@v1").wait_for()  # loaded in the server
    page.click("tr[data-version='2'] button.promote")
    page.click("#confirm-dialog button[value=cancel]")  # nothing moves without the confirmation
    page.wait_for_timeout(500)
    assert prod.locator(".alias-target").inner_text() == "v1"
    page.click("tr[data-version='2'] button.promote")
    page.click("#confirm-ok")
    page.wait_for_selector("#registry-notice:has-text('v1 → v2')")
    prod.locator(".alias-target:text-is('v2')").wait_for()
    assert page.locator("tr[data-version='2'] .aliases").inner_text() == "prod"
    prod.locator(f"text={ADAPTER}@v2").wait_for()  # the server's watch reloaded it: the UI shows it live
    r = sdk.chat.completions.create(model=f"{ADAPTER}@prod", messages=msg, max_tokens=2)
    assert r.system_fingerprint == f"{ADAPTER}@prod:{ADAPTER}@v2"


@pytest.mark.parametrize("width", WIDTHS)
def test_new_finetune_previews_and_checks_the_file(tabs, tmp_path, artifacts, width):
    import json

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    good = tmp_path / "train.jsonl"
    good.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Hi, I am Person {i}, mail p{i}@ex.com"},
        {"role": "assistant", "content": json.dumps({"name": f"Person {i}", "email": f"p{i}@ex.com"})}]}) + "\n"
        for i in range(12)))
    tab = tabs(width)
    page = tab.open("/ui/new")
    page.set_input_files("#j-file", str(bad))
    page.wait_for_selector("#j-problems:has-text('line 1: the last message must be the assistant')")
    assert page.locator("#j-problems").inner_text().count("line 2: not valid JSON") == 1
    assert page.locator("#j-submit").is_disabled()
    page.set_input_files("#j-file", str(good))
    page.wait_for_selector("#j-problems:has-text('12 rows, no problems found')")
    assert page.locator("#j-preview tbody tr").count() == 5
    assert page.locator("#j-submit").is_enabled()
    tab.shot(artifacts, "new")


def test_a_job_started_from_the_ui_goes_live_and_its_curve_gains_points(tabs, tmp_path, artifacts, world):
    import json

    good = tmp_path / "train.jsonl"
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "rocket", "garden", "silver", "forest",
             "candle"]
    good.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Example {i}: say {w}"},
                                                     {"role": "assistant", "content": f"{w} {i}"}]}) + "\n"
                            for i, w in enumerate(words)))
    tab = tabs(1280)
    page = tab.open("/ui/new")
    page.set_input_files("#j-file", str(good))
    page.wait_for_selector("#j-problems:has-text('12 rows, no problems found')")
    page.select_option("#j-model", world.base.name)
    page.fill("#j-suffix", "ui-test")
    page.fill("#j-epochs", "3")
    page.fill("#j-batch", "2")
    page.click("#j-submit")
    page.wait_for_url(re.compile(r"/ui/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[1]
    seen = []
    deadline = time.monotonic() + 600
    while "succeeded" not in page.locator("#job-status").inner_text():
        assert time.monotonic() < deadline and "failed" not in page.locator("#job-status").inner_text(), \
            page.inner_text("main")
        n = int(page.locator(".chart svg").get_attribute("data-points"))
        if not seen or seen[-1] != n:
            seen.append(n)
        page.wait_for_timeout(200)
    page.wait_for_selector("text=Compare it with its base in the playground")
    page.wait_for_selector("#curve-count:has-text('18 train points')")  # 12 rows x 3 epochs / batch 2, each once
    n = int(page.locator(".chart svg").get_attribute("data-points"))
    assert n >= 6 and len(set(seen + [n])) >= 2, seen  # 18 steps (12 rows x 3 epochs / 2): points came in
    tab.shot(artifacts, "job")
    page.click("a[data-nav=runs]")
    page.wait_for_selector(f"a[href='/ui/jobs/{job_id}']")
