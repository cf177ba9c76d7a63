"""Generate stage: the teacher writes ``generate.samples_per_input`` outputs for every input.

Inputs come from ``data.inputs`` (``.jsonl``/``.csv``/``.txt``, first ``data.max_inputs``), from the
caller, and/or — with ``generate.n_inputs`` — are written by the teacher from
``generate.seed_inputs`` (or the first file inputs), deduplicated on normalised text.

Writes into ``out_dir``:

* ``generated.jsonl`` — canonical rows, ``meta``: ``id``, ``source_id`` (the input's id),
  ``origin: "teacher"``, ``sample``;
* ``inputs.jsonl`` — every input used (``{"id", "text", "origin"}``), written ones included;
* ``failed.jsonl`` — requests the teacher failed for good (``id``, ``source_id``, ``input``,
  ``error``); rerun the stage to retry just those;
* ``manifest.json``.

Resumable: answers are journaled per batch (see :mod:`lorapipe.data.journal`), so after a
``kill -9`` a rerun asks only for what is missing — no row lost, none duplicated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorapipe.config import PipelineConfig
from lorapipe.data.formats import make_row, read_inputs, row_id
from lorapipe.data.journal import Journal, PhaseProgress, complete_keyed, normalize_text, phase
from lorapipe.data.prompts import TeacherPrompt, clean_input, input_writer_messages
from lorapipe.errors import DataError
from lorapipe.llm.base import LLM
from lorapipe.llm.calls import batch_size_for, identity_of, request, usage_delta, usage_of
from lorapipe.manifest import Manifest, sha256_file, sha256_json, write_jsonl

MAX_WRITE_ROUNDS = 3  # asks for written inputs at most this many times n_inputs, to make up for duplicates
SEEDS_FROM_FILE = 20  # file inputs the teacher sees as examples when no seed_inputs are given


def file_inputs(cfg: Any) -> list[dict[str, str]]:
    """``data.inputs`` as ``[{"id", "text"}]`` (first ``data.max_inputs``); [] when not set."""
    if cfg.data.inputs is None:
        return []
    items = read_inputs(cfg.resolve(cfg.data.inputs), cfg.data.input_field, cfg.data.max_line_bytes)
    return items[: cfg.data.max_inputs] if cfg.data.max_inputs else items


def _dedupe(items: list[dict[str, str]], where: str) -> tuple[list[dict[str, str]], int]:
    """Drop repeated inputs; an id reused for a different text is an error (rows would collide)."""
    by_id: dict[str, str] = {}
    out, dropped, clashes = [], 0, []
    for it in items:
        text = it["text"]
        if it["id"] in by_id:
            if by_id[it["id"]] != text:
                clashes.append(f"{where}: id `{it['id']}` is used for two different inputs")
            dropped += 1
            continue
        by_id[it["id"]] = text
        out.append({"id": str(it["id"]), "text": text})
    if clashes:
        raise DataError(f"{where}: {len(clashes)} input id(s) reused; give every input its own id:", clashes)
    return out, dropped


def _write_inputs(cfg: Any, teacher: Any, journal: Journal, known: list[dict[str, str]],
                  progress: PhaseProgress | None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Have the teacher write ``generate.n_inputs`` new inputs, skipping duplicates of any known one."""
    n = cfg.generate.n_inputs
    seeds = list(cfg.generate.seed_inputs) or [i["text"] for i in known[:SEEDS_FROM_FILE]]
    seen = {normalize_text(i["text"]) for i in known}
    written: list[dict[str, str]] = []
    stats = {"requests": 0, "duplicates": 0, "empty": 0, "failed": 0}
    tick = phase(progress, "generate: teacher writes inputs", n)
    nxt = 0
    while len(written) < n and nxt < MAX_WRITE_ROUNDS * n:
        need = n - len(written)
        keys = [f"input:{j}" for j in range(nxt, nxt + need)]
        items = [(k, request(cfg.teacher, input_writer_messages(cfg.task, seeds, j), sample_index=j))
                 for k, j in zip(keys, range(nxt, nxt + need))]
        done_before = sum(k in journal for k in keys)
        if tick and done_before:
            tick(done_before)
        texts, errors = complete_keyed(teacher, journal, items, batch_size=batch_size_for(cfg.teacher), tick=tick)
        stats["requests"] += need
        stats["failed"] += len(errors)
        for k in keys:
            if k not in texts:
                continue
            text = clean_input(texts[k])
            norm = normalize_text(text)
            if not norm:
                stats["empty"] += 1
            elif norm in seen:
                stats["duplicates"] += 1
            else:
                seen.add(norm)
                written.append({"id": row_id(text), "text": text})
        nxt += need
    return written, stats


def run(cfg: PipelineConfig, teacher: LLM, out_dir: str | Path, inputs: list[dict[str, str]] | list[str] | None = None,
        progress: PhaseProgress | None = None) -> Manifest:
    """Ask ``teacher`` for every (input, sample) and write ``generated.jsonl`` into ``out_dir``.

    ``inputs`` (``[{"id", "text"}]`` or strings) replaces ``data.inputs`` when given. ``teacher`` is
    an :class:`lorapipe.llm.base.LLM`; single failed requests are recorded in ``failed.jsonl`` (and
    retried by a rerun), not fatal. Returns the stage's manifest (``metrics``: inputs, rows, failed...).
    """
    out_dir = Path(out_dir)
    prompt = TeacherPrompt.from_config(cfg)
    if inputs is not None:
        given = [{"id": row_id(i), "text": i} if isinstance(i, str) else
                 {"id": str(i.get("id") or row_id(i["text"])), "text": i["text"]} for i in inputs]
        where = "generate inputs"
    else:
        given, where = file_inputs(cfg), str(cfg.resolve(cfg.data.inputs) or "data.inputs")
    given, dup_inputs = _dedupe(given, where)
    if not given and not cfg.generate.n_inputs:
        raise DataError("generate: no inputs; set `data.inputs` (a .jsonl/.csv/.txt file) or "
                        "`generate.n_inputs` (the teacher writes inputs)")
    sections = ("task", "data", "teacher", "generate")
    template = prompt.template_path
    manifest = Manifest(
        stage="generate",
        config_hash=sha256_json({"cfg": cfg.section_hash(*sections), "teacher": identity_of(teacher)}),
        inputs={"inputs": sha256_json(given),
                **({"template": sha256_file(template)} if template is not None else {})},
        config={k: v for k, v in cfg.resolved().items() if k in sections})

    journal = Journal(out_dir / "generate.partial.jsonl", manifest.key())
    usage0 = usage_of(teacher)
    written, write_stats = ([], None)
    if cfg.generate.n_inputs:
        written, write_stats = _write_inputs(cfg, teacher, journal, given, progress)
    all_inputs = [dict(i, origin="file") for i in given] + [dict(i, origin="teacher") for i in written]
    if not all_inputs:
        raise DataError("generate: the teacher wrote no usable input; check the teacher (see failed.jsonl) "
                        "or give `generate.seed_inputs`")

    n_samples = cfg.generate.samples_per_input
    items, owners = [], {}
    for inp in all_inputs:
        msgs = prompt.messages(inp["text"])
        for s in range(n_samples):
            key = f"out:{inp['id']}:{s}"
            items.append((key, request(cfg.teacher, msgs, sample_index=s)))
            owners[key] = (inp, s)
    done = sum(k in journal for k, _ in items)
    tick = phase(progress, "generate: teacher outputs", len(items), done)
    texts, errors = complete_keyed(teacher, journal, items, batch_size=batch_size_for(cfg.teacher), tick=tick)

    rows, failed = [], []
    for key, _ in items:
        inp, s = owners[key]
        rid = row_id("teacher", inp["id"], str(s))
        if key in texts:
            rows.append(make_row(cfg.task.system_prompt, inp["text"], texts[key].strip(), id=rid,
                                 source_id=inp["id"], origin="teacher", sample=s))
        else:
            failed.append({"id": rid, "source_id": inp["id"], "input": inp["text"],
                           "error": errors.get(key, "no answer")})
    # Failed input-writing requests matter only while inputs are still missing.
    write_failed = write_stats["failed"] if write_stats and len(written) < cfg.generate.n_inputs else 0
    write_jsonl(out_dir / "inputs.jsonl", all_inputs)
    write_jsonl(out_dir / "generated.jsonl", rows)
    if failed:
        write_jsonl(out_dir / "failed.jsonl", failed)
    else:
        (out_dir / "failed.jsonl").unlink(missing_ok=True)
    # Keep the journal while something failed, so a rerun asks only for the failed requests.
    journal.close(delete=not failed and not write_failed)
    manifest.metrics = {
        "inputs": len(all_inputs), "inputs_from_file": len(given), "inputs_written": len(written),
        "duplicate_inputs_dropped": dup_inputs + (write_stats["duplicates"] if write_stats else 0),
        "samples_per_input": n_samples, "requests": len(items), "rows": len(rows),
        "failed": len(failed) + write_failed,
    }
    manifest.extra = {"teacher": identity_of(teacher), "teacher_usage": usage_delta(usage0, usage_of(teacher)),
                      "resumed": journal.resumed, "input_writing": write_stats,
                      "prompt": {"template": str(template) if template else "builtin",
                                 "example": prompt.messages(all_inputs[0]["text"])}}
    manifest.save(out_dir)
    return manifest
