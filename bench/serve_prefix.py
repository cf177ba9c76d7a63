"""Teacher requests sharing a system+examples prefix: `lorapipe serve`'s engine with and without prefix reuse.

    python bench/serve_prefix.py [examples/contact-extraction/pipeline.yaml] [--inputs 8] [--max-tokens 1]

Builds the teacher prompts of the first ``--inputs`` inputs of a pipeline config (the built-in
prompt, few-shot examples as turns), loads the config's base model once, and submits them all at
once to an engine without prefix reuse (the baseline) and then to one with it (a fresh engine, so
nothing is kept yet: the first wave computes the shared prefix once). Prints, for each, the time
until the last request's first token and until all are done, and last their ratio. Then the same
batch again on the second engine (the prefix is kept now).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorapipe.config import load_config
from lorapipe.data.generate import file_inputs
from lorapipe.data.prompts import TeacherPrompt
from lorapipe.decoding.batch import SamplingParams
from lorapipe.serve.engine import Engine


def wave(engine: Engine, prompts: list[list[int]], max_tokens: int) -> tuple[float, float]:
    """Submit every prompt at once; (seconds to the last first token, seconds to the last finish)."""
    first: dict[int, float] = {}
    t0 = time.perf_counter()
    jobs = []
    for i, p in enumerate(prompts):
        def sink(_: int, delta: str, fin: str | None, i: int = i) -> None:
            if (delta or fin) and i not in first:
                first[i] = time.perf_counter() - t0

        jobs.append(engine.submit(engine.acquire(engine.base_name), p,
                                  [SamplingParams(max_tokens=max_tokens, temperature=0)], sink))
    for job in jobs:
        job.done.wait()
    return max(first.values()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "examples/contact-extraction/pipeline.yaml"))
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=1, help="1 measures the prefill alone")
    args = ap.parse_args()
    from lorapipe.models import load

    cfg = load_config(args.config, {"data.max_inputs": args.inputs})
    prompt = TeacherPrompt.from_config(cfg)
    model, tok, info = load(cfg.base_model)
    results = {}
    for name, tokens in (("no prefix reuse", 0), ("prefix reuse", 4096)):
        engine = Engine(model, tok, base_name="base", base_identity=info.identity(), max_batch_size=16,
                        prefix_cache_tokens=tokens).start()
        prompts = [engine.encode_chat(prompt.messages(i["text"])) for i in file_inputs(cfg)]
        engine.generate("base", prompts[0][:8], [SamplingParams(max_tokens=1)])  # warm-up, nothing shared
        results[name] = wave(engine, prompts, args.max_tokens)
        print(f"{name:>16}: {len(prompts)} requests of {sum(map(len, prompts)) / len(prompts):.0f} prompt tokens: "
              f"last first token {results[name][0]:.1f} s, all done {results[name][1]:.1f} s", flush=True)
        if tokens:
            again = wave(engine, prompts, args.max_tokens)
            print(f"{'kept prefix':>16}: the same batch again: last first token {again[0]:.1f} s, all done "
                  f"{again[1]:.1f} s", flush=True)
        engine.shutdown()
    base, reuse = results["no prefix reuse"], results["prefix reuse"]
    print(f"ratio without/with prefix reuse: {base[0] / reuse[0]:.2f}x to the last first token, "
          f"{base[1] / reuse[1]:.2f}x to all done")


if __name__ == "__main__":
    main()
