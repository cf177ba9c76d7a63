"""The event stream's pieces: the bus, the append-only file, and the terminal subscriber."""

from __future__ import annotations

import json

import pytest

from lorapipe.events import EventBus, EventLog, read_events
from lorapipe.progress import ConsoleProgress, set_quiet


def test_log_round_trip_repairs_a_torn_tail_and_continues_seq(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus()
    log = EventLog(path)
    log.attach(bus)
    bus.emit("run_started", stages=["probe"])
    bus.emit("stage_started", "probe", why=["no finished run"])
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq": 3, "ty')
    assert [e["type"] for e in read_events(path)] == ["run_started", "stage_started"]

    bus2 = EventBus()
    log2 = EventLog(path)  # cuts the torn line off
    log2.attach(bus2)
    bus2.emit("stage_skipped", "probe")
    log2.close()
    events = read_events(path)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[2]["run"] == bus2.run_id != events[0]["run"]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert [e["seq"] for e in read_events(path, after=2)] == [3]


def test_unknown_event_types_are_refused():
    with pytest.raises(ValueError, match="unknown event type 'stage_done'"):
        EventBus().emit("stage_done", "probe")


def test_progress_ticks_are_coalesced_but_the_last_one_is_kept():
    bus, seen = EventBus(), []
    bus.subscribe(seen.append)
    tick = bus.progress("generate")("generate: teacher outputs", 1000)
    for _ in range(1000):
        tick(1)
    progress = [e for e in seen if e["type"] == "progress"]
    assert progress[0]["n"] == 0 and progress[-1]["n"] == 1000
    assert len(progress) < 20


def test_the_terminal_view_is_a_subscriber_of_the_same_events(capsys):
    set_quiet(False)
    bus = EventBus()
    bus.subscribe(ConsoleProgress())
    bus.emit("stage_skipped", "probe")
    bus.emit("stage_started", "generate", why=["code:teacher"])
    tick = bus.progress("generate")("generate: teacher outputs", 10)
    tick(10)
    bus.emit("train_metrics", "train", step=5, total_steps=10, loss=0.25)
    bus.emit("message", "generate", text="generated 10 rows")
    bus.emit("warning", "generate", text="2 request(s) failed for good")
    bus.emit("stage_finished", "generate", seconds=3.2, metrics={})
    err = capsys.readouterr().err
    for line in ["probe: up to date (skipped)", "▶ generate (code:teacher)", "generate: teacher outputs: 10/10 (100%)",
                 "train step 5/10: loss 0.25", "generated 10 rows", "warning: 2 request(s) failed for good",
                 "generate done in 3 s"]:
        assert line in err, (line, err)
