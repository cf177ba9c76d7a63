"""The A/B's answer generation on a finished run, three ways: transformers' generate, fast fp32, fast fp16.

    python bench/ab_generation.py examples/contact-extraction/pipeline.yaml [--run RUN_DIR] [--threads 2]

Answers the run's eval split (``RUN/split/eval.jsonl``) with the base and the tuned arm exactly as
the evaluate stage does (``lorapipe.evaluate.ab``: same prompts, ``evaluate.*`` decoding settings,
the adapter ``RUN/train/adapter``), once per decode path, and prints for each: seconds (wall and
CPU), exact match per arm, and how many answers equal the transformers path's. Ratios last.
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
    ap.add_argument("--paths", default="transformers,fp32,fp16", help="comma-separated decode paths to time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from peft import PeftModel

    from lorapipe.config import load_config
    from lorapipe.data.formats import assistant_text, read_rows
    from lorapipe.evaluate.ab import _reference_is_json, exact_match, prompt_messages
    from lorapipe.generation import generate
    from lorapipe.models import load

    cfg = load_config(args.config)
    run = args.run or cfg.run_dir
    rows = read_rows(run / "split" / "eval.jsonl")
    if cfg.evaluate.max_inputs:
        rows = rows[: cfg.evaluate.max_inputs]
    base, tok, _ = load(cfg.base_model)
    model = PeftModel.from_pretrained(base, run / "train" / "adapter").eval()
    prompts = [prompt_messages(cfg, r) for r in rows]
    refs = [assistant_text(r) for r in rows]
    e = cfg.evaluate
    results = {}
    for path in args.paths.split(","):
        kw = {"fast": path != "transformers", "weights": path if path != "transformers" else "fp32"}
        t0, c0 = time.perf_counter(), time.process_time()
        answers = {}
        for arm in ("base", "tuned"):
            if arm == "base":
                with model.disable_adapter():
                    answers[arm] = generate(model, tok, prompts, max_new_tokens=e.max_new_tokens,
                                            temperature=e.temperature, batch_size=e.batch_size, seed=0, **kw)
            else:
                answers[arm] = generate(model, tok, prompts, max_new_tokens=e.max_new_tokens,
                                        temperature=e.temperature, batch_size=e.batch_size, seed=0, **kw)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        em = {arm: sum(exact_match(g.text, ref, _reference_is_json(cfg, ref)) for g, ref in zip(gens, refs))
              / len(rows) for arm, gens in answers.items()}
        results[path] = (wall, cpu, em, answers)
        print(f"{path:12s} {wall:7.1f} s wall {cpu:7.1f} s CPU  exact match base {em['base']:.1%} "
              f"tuned {em['tuned']:.1%}", flush=True)
    ref_path = "transformers" if "transformers" in results else next(iter(results))
    ref_wall, ref_cpu, ref_em, ref_answers = results[ref_path]
    print(f"\n{len(rows)} eval rows x 2 arms; against `{ref_path}` measured in this run:")
    for path, (wall, cpu, em, answers) in results.items():
        same = {arm: sum(a.text == b.text for a, b in zip(answers[arm], ref_answers[arm])) for arm in answers}
        print(f"{path:12s} {ref_wall / wall:5.2f}x faster wall, {ref_cpu / cpu:5.2f}x per CPU-second; identical "
              f"answers base {same['base']}/{len(rows)}, tuned {same['tuned']}/{len(rows)}; exact match tuned "
              f"{(em['tuned'] - ref_em['tuned']) * 100:+.1f} points")


if __name__ == "__main__":
    main()
