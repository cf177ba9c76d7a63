"""Decoding speed side by side: transformers' generate, the builtin engine, and llama.cpp when installed.

    python bench/decode.py [--model smollm2-135m-instruct] [--threads 2] [--max-tokens 64]
                           [--eval RUN/split/eval.jsonl --adapter RUN/train/adapter]

The same chat prompts, greedy, fixed lengths (end-of-sequence ignored), measured in this run:

  hf generate   ``model.generate`` one prompt at a time (what predict/probe/A-B used before);
  builtin b1    the serve engine (lorapipe.serve.engine), one request at a time, per weight mode;
  builtin b16   16 requests at once: the base, one LoRA adapter, 8 adapters mixed in the batch
                (random r=16 adapters on every projection, as bench/serve_mixed.py);
  llama.cpp     llama-cpp-python on the model's GGUF (embedded model only), batch 1, when importable.

Each arm prints tokens/s (wall and per CPU-second: other jobs on a shared machine move the first
more than the second) and the time to first token (a 1-token request). Then the greedy agreement
of the bf16, fp16 and int8 weights with the fp32 reference: answers (stopping at end-of-sequence) on
the bench prompts, or on ``--eval`` rows with ``--adapter`` (the demo's eval split and adapter).
Ratios last, for the default mode (``inference.weights: auto``: bf16 with AMX, else fp16) and int8.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from lorapipe.decoding.batch import SamplingParams
from lorapipe.serve.adapters import DirectoryAdapterSource
from lorapipe.serve.engine import Engine
from lorapipe.testing import build_tiny_adapter

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("Hi, I'm Ann Lee from Acme; write to ann.lee@example.com or call +1 555 123 4567 about the invoice "
         "for March and the delivery in April").split()


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rate(tokens: int, t0: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = time.perf_counter() - t0[0], time.process_time() - t0[1]
    return tokens / wall, tokens / max(cpu, 1e-9)


def batch1(one: Callable[[list[int], int], int], prompts: list[list[int]], n: int) -> tuple[float, float, float]:
    """(tok/s, tok/s per CPU-second, seconds to first token) of ``one(prompt, k)``, one prompt at a time,
    after a warm-up; ``one`` returns the tokens it generated."""
    one(prompts[0], 2)
    t = clock()
    one(prompts[0], 1)
    ttft = time.perf_counter() - t[0]
    t = clock()
    tokens = sum(one(p, n) for p in prompts)
    return (*rate(tokens, t), ttft)


def hf_generate(model, prompts: list[list[int]], n: int, pad_id: int) -> tuple[float, float, float]:
    """(tok/s, tok/s per CPU-second, seconds to first token) of model.generate at batch 1."""
    def one(p: list[int], k: int) -> int:
        ids = torch.tensor([p])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                             min_new_tokens=k, do_sample=False, pad_token_id=pad_id)
        return out.shape[1] - len(p)

    with torch.inference_mode():
        return batch1(one, prompts, n)


def engine_run(engine: Engine, jobs: list[tuple[str, list[int]]], n: int) -> int:
    """Submit ``jobs`` at once; wait; return the tokens generated."""
    leases = [engine.acquire(model) for model, _ in jobs]
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)]
    done = [engine.submit(lease, p, params, lambda *a: None) for lease, (_, p) in zip(leases, jobs, strict=True)]
    for job in done:
        job.done.wait()
    return sum(len(r.tokens) for job in done for r in job.rows)


def engine_b1(engine: Engine, prompts: list[list[int]], n: int) -> tuple[float, float, float]:
    engine_run(engine, [("base", prompts[0])], 2)
    t = clock()
    engine_run(engine, [("base", prompts[0])], 1)
    ttft = time.perf_counter() - t[0]
    t = clock()
    tokens = sum(engine_run(engine, [("base", p)], n) for p in prompts)
    return (*rate(tokens, t), ttft)


def engine_batch(engine: Engine, jobs: list[tuple[str, list[int]]], n: int, repeats: int) -> tuple[float, float]:
    engine_run(engine, jobs, 2)  # loads the adapters, first allocations
    best = (0.0, 0.0)
    for _ in range(repeats):
        t = clock()
        best = max(best, rate(engine_run(engine, jobs, n), t))
    return best


def llama_cpp(gguf: Path, prompts: list[list[int]], n: int, threads: int) -> tuple[float, float, float] | None:
    try:
        import llama_cpp as _  # noqa: F401  (only whether it is installed)
    except ImportError:
        return None
    from lorapipe.llamacpp import open_llama

    llm = open_llama(gguf, n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)

    def one(p: list[int], k: int) -> int:
        llm.reset()
        count = 0
        for _ in llm.generate(p, top_k=1, temp=0.0, reset=True):
            count += 1
            if count >= k:
                break
        return count

    return batch1(one, prompts, n)


def agreement(model, tok, convs: list[list[dict[str, str]]], max_tokens: int, batch: int,
              modes: tuple[str, ...] = ("bf16", "fp16", "int8")) -> dict[str, tuple[int, int]]:
    """Per weight mode, (answers identical to the fp32 reference, rows), greedy."""
    from lorapipe.generation import generate

    ref = generate(model, tok, convs, max_new_tokens=max_tokens, batch_size=batch, weights="fp32")
    out = {}
    for mode in modes:
        got = generate(model, tok, convs, max_new_tokens=max_tokens, batch_size=batch, weights=mode)
        out[mode] = (sum(a.text == b.text for a, b in zip(ref, got, strict=True)), len(convs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=4, help="prompts of the batch-1 arms")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each batch arm; the fastest counts")
    ap.add_argument("--eval", type=Path, default=None, help="chat rows (eval.jsonl) for the agreement check")
    ap.add_argument("--adapter", type=Path, default=None, help="PEFT adapter for the agreement check")
    ap.add_argument("--skip-hf", action="store_true", help="leave out transformers' generate (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from lorapipe.models import EMBEDDED, load, resolve

    model, tok, info = load(args.model)
    model.eval()
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    convs = [[{"role": "user", "content": " ".join(WORDS[: 6 + (3 * i) % (len(WORDS) - 6)])}]
             for i in range(args.batch)]
    prompts = [tok.apply_chat_template(c, tokenize=True, add_generation_prompt=True) for c in convs]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    n = args.max_tokens
    rows: list[tuple[str, float, float, float | None]] = []
    hf = None
    if not args.skip_hf:
        hf = hf_generate(model, prompts[: args.prompts], n, pad_id)
        rows.append(("hf generate b1", *hf))
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"ad{i}" for i in range(8)]
        for i, name in enumerate(names):
            build_tiny_adapter(resolve(args.model).path, Path(tmp) / name, r=16, seed=i, b_std=0.02,
                               target_modules=ALL)
        engines = {}
        for weights in ("fp32", "fp16", "bf16", "int8"):
            t0 = time.perf_counter()
            engines[weights] = Engine(model, tok, base_name="base", base_identity=info.identity(),
                                      source=DirectoryAdapterSource(Path(tmp)), max_batch_size=args.batch,
                                      weights=weights).start()
            print(f"builtin {weights}: ready in {time.perf_counter() - t0:.2f} s", flush=True)
        results = {}
        for weights, engine in engines.items():
            results[weights, "b1"] = engine_b1(engine, prompts[: args.prompts], n)
            rows.append((f"builtin {weights} b1", *results[weights, "b1"]))
            for label, jobs in (("base", [("base", p) for p in prompts]),
                                ("1 adapter", [(names[0], p) for p in prompts]),
                                ("8 adapters", [(names[i % 8], p) for i, p in enumerate(prompts)])):
                results[weights, label] = engine_batch(engine, jobs, n, args.repeats)
                rows.append((f"builtin {weights} b{args.batch} {label}", *results[weights, label], None))
            engine.shutdown()
    gguf = None
    if args.model in EMBEDDED:
        import importlib.util

        spec = importlib.util.find_spec(EMBEDDED[args.model]["package"])
        gguf = Path(spec.origin).parent / EMBEDDED[args.model]["gguf"] if spec and spec.origin else None
    lc = llama_cpp(gguf, prompts[: args.prompts], n, args.threads) if gguf else None
    if lc:
        rows.append(("llama.cpp b1", *lc))

    print(f"\nmodel {args.model}; {args.threads} threads; {n} tokens per answer, greedy, eos ignored")
    print(f"{'arm':34s} {'tok/s':>8s} {'tok/CPU-s':>10s} {'first token':>12s}")
    for name, tps, cps, ttft in rows:
        print(f"{name:34s} {tps:8.1f} {cps:10.1f} {'' if ttft is None else f'{ttft * 1000:9.0f} ms':>12s}")

    if args.eval is not None:
        from peft import PeftModel

        evals = [json.loads(line) for line in args.eval.read_text().splitlines() if line.strip()]
        econvs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in evals]
        amodel = PeftModel.from_pretrained(model, args.adapter).eval() if args.adapter else model
        agree = agreement(amodel, tok, econvs, 96, 8)
        where = f"{args.eval} ({'adapter ' + str(args.adapter) if args.adapter else 'base'})"
    else:
        agree = agreement(model, tok, convs, n, 8)
        where = "the bench prompts (base)"
    print()
    for mode, (same, total) in agree.items():
        print(f"greedy agreement {mode} vs fp32 on {where}: {same}/{total} answers identical "
              f"({same / max(1, total):.1%})")

    from lorapipe.decoding.llama import resolve_weights

    auto = resolve_weights("auto")
    dflt, f32b1, f16b1 = results[auto, "b1"], results["fp32", "b1"], results["fp16", "b1"]
    print(f"\nratios (same run; the default weights here, auto, are {auto}):")
    if hf:
        print(f"builtin {auto} b1 / hf generate b1          = {dflt[0] / hf[0]:5.2f}x wall, "
              f"{dflt[1] / hf[1]:5.2f}x per CPU-second")
    print(f"builtin {auto} b1 / builtin fp32 b1         = {dflt[0] / f32b1[0]:5.2f}x")
    for label in ("base", "8 adapters"):
        print(f"builtin bf16 / fp16 b{args.batch} {label:10s}       = "
              f"{results['bf16', label][0] / results['fp16', label][0]:5.2f}x")
    base16, mixed16 = results[auto, "base"], results[auto, "8 adapters"]
    print(f"builtin {auto} b{args.batch} 8 adapters / base          = {mixed16[0] / base16[0]:5.2f}x wall, "
          f"{mixed16[1] / base16[1]:5.2f}x per CPU-second")
    i8b1 = results["int8", "b1"]
    print(f"builtin int8 b1 / builtin fp16 b1         = {i8b1[0] / f16b1[0]:5.2f}x")
    if lc:
        for mode, b1 in ((auto, dflt), ("int8", i8b1)):
            print(f"builtin {mode} b1 / llama.cpp b1            = {b1[0] / lc[0]:5.2f}x wall, "
                  f"{b1[1] / lc[1]:5.2f}x per CPU-second")
    print(f"targets: builtin b1 >= 32 tok/s (now {dflt[0]:.1f}), b{args.batch} base >= 150 tok/s "
          f"(now {base16[0]:.1f})")


if __name__ == "__main__":
    main()
