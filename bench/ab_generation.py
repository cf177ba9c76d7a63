"""The A/B's decoding and losses on a finished run, the way the evaluate stage does them, against older ways.

    python bench/ab_generation.py examples/contact-extraction/pipeline.yaml [--run RUN_DIR] [--threads 2]
                                  [--ways apart-fp16,fp32,default]

Answers the run's eval split (``RUN/split/eval.jsonl``, ``evaluate.max_inputs`` rows) and every check
set (``evaluate.extra_sets``) with the base and the tuned arm (the adapter ``RUN/train/adapter``), same
prompts and decoding settings as ``lorapipe.evaluate.ab``, then scores both arms' eval loss. Ways:

  apart-fp16  as the stage did when issue 18 was filed: one generate call per arm and set, fp16 weights,
              batch 16, and the losses through transformers' forward, one arm after the other;
  fp32        the stage's way with fp32 weights: the reference the agreement is counted against;
  default     the stage's way now: one generate call for every arm and set (``evaluate.batch_size``
              rows decoding together), ``inference.weights`` (auto: bf16 with AMX, else fp16), and the
              arms' losses scored together on the fast path.

Each way prints seconds (generation, losses, total; wall and CPU), exact match per arm and set, and
the losses; then, against the ``fp32`` way measured in this run, how many answers are identical per
arm, and the speed ratios against ``apart-fp16``. The engine's internals (KV cache, prefill passes) are
today's in every way, so the ratio is what the stage's choices give, not the whole gain since then.

``--train-steps N`` then trains N optimizer steps in this process (the config's training, into a
temporary folder; ``--train-in thread``: on a thread of its own, ``child``: in a child process, as
``lorapipe run`` does when it goes on to evaluate) and times the ``default`` way again, as
the demo's evaluate stage used to run after 723 steps in the same process: it prints the training time and
the ratio after/before. Measured 2026-12-03 (2 cores): after 300 steps on the main thread the A/B's
decoding took 59.8 s instead of 46.4 s (1.29x, +31 % CPU): training leaves glibc's malloc arena of the
thread fragmented; on a thread of its own the caller's ops kept their speed, but 40 steps took 58 s
instead of 44 s (libgomp throttles its spin-wait while two OpenMP pools are alive on 2 cores). Same hour, 60 steps:
``--train-in main`` 1.30x, ``--train-in child`` 1.05x (what ``lorapipe run`` does since then).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="run directory (default: the config's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ways", default="apart-fp16,fp32,default", help="comma-separated ways to time")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="then train this many steps in this process and time the default way again")
    ap.add_argument("--train-in", choices=("main", "thread", "child"), default="main",
                    help="where the --train-steps run: this thread, a thread of its own, or a child process")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from peft import PeftModel

    from lorapipe.config import load_config
    from lorapipe.data.formats import assistant_text, read_rows
    from lorapipe.decoding.batch import BASE_ADAPTER
    from lorapipe.decoding.llama import resolve_weights
    from lorapipe.evaluate.ab import _reference_is_json, exact_match, prompt_messages, read_extra_sets
    from lorapipe.evaluate.metrics import eval_loss, eval_losses
    from lorapipe.generation import copy_sources, generate
    from lorapipe.models import load

    cfg = load_config(args.config)
    run = args.run or cfg.run_dir
    e = cfg.evaluate
    split = read_rows(run / "split" / "eval.jsonl")
    sets = {"split": split[: e.max_inputs] if e.max_inputs else split, **read_extra_sets(cfg)}
    base, tok, _ = load(cfg.base_model)
    model = PeftModel.from_pretrained(base, run / "train" / "adapter").eval()
    tuned_name = model.active_adapter
    prompts = {name: [prompt_messages(cfg, r) for r in rows] for name, rows in sets.items()}
    refs = {name: [assistant_text(r) for r in rows] for name, rows in sets.items()}
    loss_kw = {"max_length": cfg.train.max_seq_length, "batch_size": cfg.train.per_device_eval_batch_size}

    def decode(convs, names, weights, batch_size):
        return generate(model, tok, convs, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                        batch_size=batch_size, seed=0, weights=weights, copy_from=copy_sources(cfg, convs),
                        adapter_names=names)

    results = {}

    def time_way(way: str) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        answers: dict[tuple[str, str], list[str]] = {}
        if way == "apart-fp16":
            for name, convs in prompts.items():
                for arm in ("base", "tuned"):
                    got = decode(convs, [BASE_ADAPTER if arm == "base" else tuned_name] * len(convs), "fp16", 16)
                    answers[name, arm] = [g.text for g in got]
        else:
            convs = [c for name in prompts for c in prompts[name]] * 2
            names = [BASE_ADAPTER] * (len(convs) // 2) + [tuned_name] * (len(convs) // 2)
            got = [g.text for g in decode(convs, names, "fp32" if way == "fp32" else cfg.inference.weights,
                                          e.batch_size)]
            at = 0
            for arm in ("base", "tuned"):
                for name, rows in prompts.items():
                    answers[name, arm] = got[at:at + len(rows)]
                    at += len(rows)
        t1, c1 = time.perf_counter(), time.process_time()
        if way == "apart-fp16":
            with model.disable_adapter():
                losses = [eval_loss(model, tok, sets["split"], fast=False, **loss_kw)]
            losses.append(eval_loss(model, tok, sets["split"], fast=False, **loss_kw))
        else:
            losses = eval_losses(model, tok, sets["split"], [None, tuned_name],
                                 weights="fp32" if way == "fp32" else cfg.inference.weights, **loss_kw)
        t2, c2 = time.perf_counter(), time.process_time()
        em = {key: sum(exact_match(a, ref, _reference_is_json(cfg, ref)) for a, ref in zip(got, refs[key[0]]))
              for key, got in answers.items()}
        shown = ", ".join(f"{name} {arm} {em[name, arm]}/{len(refs[name])}" for name, arm in answers)
        print(f"{way:10s} generation {t1 - t0:6.1f} s ({c1 - c0:6.1f} CPU-s), losses {t2 - t1:5.1f} s, total "
              f"{t2 - t0:6.1f} s; exact {shown}; loss base {losses[0]['loss']:.4f} tuned {losses[1]['loss']:.4f}",
              flush=True)
        return {"gen": (t1 - t0, c1 - c0), "loss": (t2 - t1, c2 - c1), "all": (t2 - t0, c2 - c0), "answers": answers}

    for way in args.ways.split(","):
        results[way] = time_way(way)
    if args.train_steps:
        after_training(args, run, results.get("default") or time_way("default"), time_way)

    n = sum(len(r) for r in prompts.values())
    print(f"\n{n} inputs x 2 arms (split {len(sets['split'])}"
          + "".join(f", {k} {len(v)}" for k, v in sets.items() if k != "split")
          + f"); inference.weights {cfg.inference.weights} = {resolve_weights(cfg.inference.weights)} here")
    if "fp32" in results:
        ref = results["fp32"]["answers"]
        for way, r in results.items():
            same = {arm: sum(a == b for key in r["answers"] if key[1] == arm
                             for a, b in zip(r["answers"][key], ref[key])) for arm in ("base", "tuned")}
            print(f"{way:10s} greedy answers identical to fp32: base {same['base']}/{n}, tuned {same['tuned']}/{n}")
    if "apart-fp16" in results:
        old = results["apart-fp16"]
        for way, r in results.items():
            print(f"{way:10s} vs apart-fp16: " + ", ".join(
                f"{part} {old[part][0] / r[part][0]:4.2f}x wall ({old[part][1] / r[part][1]:4.2f}x per CPU-s)"
                for part in ("gen", "loss", "all")))


def after_training(args, run: Path, before: dict, time_way) -> None:
    """Train ``args.train_steps`` steps (``args.train_in``), time the default way again, print after/before."""
    import tempfile
    import threading

    from lorapipe.config import load_config
    from lorapipe.events import EventBus
    from lorapipe.train import child, trainer

    steps = args.train_steps
    tcfg = load_config(args.config, {"train.max_steps": steps, "train.eval_steps": 10 ** 9})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()

        def work() -> None:
            if args.train_in == "child":
                child.run(tcfg, run / "split" / "train.jsonl", None, Path(tmp), resume=False, bus=EventBus())
            else:
                trainer.run(tcfg, run / "split" / "train.jsonl", None, Path(tmp), resume=False)

        if args.train_in == "thread":
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
        else:
            work()
        where = {"main": "on the main thread", "thread": "on a thread of its own", "child": "in a child process"}
        print(f"\ntrained {steps} steps {where[args.train_in]} in {time.perf_counter() - t0:.1f} s", flush=True)
    after = time_way("default")
    print("default after training / before: " + ", ".join(
        f"{part} {after[part][0] / before[part][0]:4.2f}x wall ({after[part][1] / before[part][1]:4.2f}x CPU-s)"
        for part in ("gen", "loss", "all")))


if __name__ == "__main__":
    main()
