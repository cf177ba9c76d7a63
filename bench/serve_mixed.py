"""Serving throughput with many adapters: mixed-adapter batches vs one merged model vs adapter swapping.

    python bench/serve_mixed.py [--requests 64] [--max-tokens 32] [--adapters 8] [--kernel stacked|peft]
                                [--threads 1] [--model smollm2-135m-instruct]

Builds a random base (a bigger tiny Llama unless --model is given) and 8 random r=16 LoRA adapters
on every projection, then generates the same request stream (prompts and lengths fixed, greedy,
``ignore_eos``) three ways, each measured in this run:

  mixed    the server's engine, requests spread over all adapters, batched together per step
           (stacked LoRA kernel, or PEFT's `adapter_names` path with --kernel peft) — what
           `lorapipe serve` does;
  merged   the same engine serving one adapter merged into the base (no LoRA compute at all):
           the throughput ceiling;
  swapping one request at a time: `model.set_adapter(name)` then `model.generate` — what a server
           without mixed batches must do when consecutive requests want different adapters.

and, on the fast decode path, a fourth arm that bounds the first from above:

  reads    the mixed engine with each LoRA layer's maths replaced by reading the weights it must
           read (``sum`` over the adapters' A^T and (B*s)^T stacks the pass uses): exact fp32 LoRA
           cannot beat this, so reads/merged is the ceiling of mixed/merged on this machine.

Prints tokens/s for each (wall clock and per CPU-second of this process) and, last, the ratios
with their targets: mixed/merged >= 0.8 and mixed/swapping >= 3. The mixed and merged runs are
interleaved, --repeats times each (default 5), and the median and the fastest run are both printed,
so a busy moment on a shared machine does not decide the ratio; the per-CPU-second ratio moves
least with other jobs. On a CPU shared with other jobs pass --threads 1 (OpenMP threads competing
for cores are ~20x slower). The engines decode on the fast path (inference.weights: --weights, auto by default).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from lorapipe.decoding.batch import SamplingParams
from lorapipe.decoding.llama import resolve_weights
from lorapipe.serve.adapters import DirectoryAdapterSource
from lorapipe.serve.engine import Engine
from lorapipe.testing import build_tiny_adapter, build_tiny_model

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_base(root: Path, model: str | None, hidden: int, layers: int) -> Path:
    if model:
        from lorapipe.models import resolve

        return resolve(model).path
    # "bigger tiny": enough compute per token that the model, not Python, dominates a step
    return build_tiny_model(root / "base", hidden_size=hidden, num_layers=layers, num_heads=8, num_kv_heads=4,
                            intermediate_size=hidden * 8 // 3 // 32 * 32)


def run_engine(engine: Engine, jobs: list[tuple[str, list[int]]], max_tokens: int) -> tuple[float, int, float]:
    """Submit every request at once (an open-loop burst); return (seconds, tokens, CPU seconds)."""
    leases = [engine.acquire(model) for model, _ in jobs]  # adapters loaded before the clock starts
    params = [SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)]
    t0, c0 = time.perf_counter(), time.process_time()
    submitted = [engine.submit(lease, prompt, params, lambda *a: None) for lease, (_, prompt) in zip(leases, jobs)]
    for job in submitted:
        job.done.wait()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dt, sum(len(r.tokens) for job in submitted for r in job.rows), cpu


def run_swapping(model, tok, jobs: list[tuple[str, list[int]]], max_tokens: int) -> tuple[float, int, float]:
    device = next(model.parameters()).device
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    with torch.inference_mode():
        for name, prompt in jobs:
            model.set_adapter(name)
            ids = torch.tensor([prompt], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - len(prompt)
    return time.perf_counter() - t0, tokens, time.process_time() - c0


def read_only_lora(x, outs, modules, names, layer, lora, segments, tokens, grouped=None) -> None:
    """What the reads arm puts in place of ``lorapipe.decoding.llama._add_lora``: read the LoRA weights the
    pass needs (as the real kernel does: one slot range per projection for many runs, else each run's
    adapter), add nothing."""
    for module, name in zip(modules, names):
        if grouped is not None:
            pairs = [lora.stacks(module, layer, name, grouped.lo, grouped.hi)]
        else:
            views = lora.views(module, layer, name)
            pairs = [] if views is None else [views[key] for key, _, _ in segments]
        for pair in pairs:
            if pair is not None:
                pair[0].sum()
                pair[1].sum()


@contextlib.contextmanager
def lora_reads_only():
    import lorapipe.decoding.llama as fast

    real = fast._add_lora
    fast._add_lora = read_only_lora
    try:
        yield
    finally:
        fast._add_lora = real


def summary(runs: list[tuple[float, int, float]]) -> tuple[float, float, float]:
    """(median tok/s, best tok/s, median tok/CPU-s) over repeated runs of (seconds, tokens, CPU seconds)."""
    walls = sorted(n / t for t, n, _ in runs)
    cpus = sorted(n / c for _, n, c in runs)
    return walls[len(walls) // 2], walls[-1], cpus[len(cpus) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="serve.max_batch_size")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs per engine arm (median and best)")
    ap.add_argument("--weights", default="auto", choices=["auto", "bf16", "fp16", "fp32", "int8"],
                    help="inference.weights of the engines (auto: bf16 with AMX, else fp16)")
    ap.add_argument("--kernel", default="stacked", choices=["stacked", "peft"],
                    help="how mixed batches apply LoRA (serve's --lora-kernel)")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size of the tiny base")
    ap.add_argument("--layers", type=int, default=4, help="layers of the tiny base")
    ap.add_argument("--model", default=None, help="base model spec (default: a bigger tiny random Llama)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 avoids OpenMP thrashing on a machine shared with other jobs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_base(root, args.model, args.hidden, args.layers)
        names = [f"ad{i}" for i in range(args.adapters)]
        for i, name in enumerate(names):
            build_tiny_adapter(base, root / "adapters" / name, r=16, seed=i, b_std=0.02, target_modules=ALL)
        engine = Engine.from_spec(str(base), source=DirectoryAdapterSource(root / "adapters"), base_name="base",
                                  max_loaded_adapters=args.adapters, batch_window_ms=5, max_batch_size=args.batch,
                                  lora_kernel=args.kernel, device=args.device, weights=args.weights).start()
        words = ["extract", "the", "contact", "name", "email", "and", "phone", "from", "this", "message", "please"]
        prompts = [engine.encode_chat([{"role": "user", "content": " ".join(words[: 3 + i % 9])}])
                   for i in range(args.requests)]
        mixed_jobs = [(names[i % len(names)], p) for i, p in enumerate(prompts)]

        # merged: adapter 0 folded into the base, served by the same engine code with no adapters
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), root / "adapters" / names[0])
        merged = merged.merge_and_unload().eval()
        if args.device:
            merged.to(args.device)
        m_engine = Engine(merged, engine.tokenizer, base_name="merged", batch_window_ms=5,
                          max_batch_size=args.batch, weights=args.weights).start()
        merged_jobs = [("merged", p) for p in prompts]

        run_engine(engine, mixed_jobs[: args.batch], 4)  # warm-up: loads every adapter, first allocations
        run_engine(m_engine, merged_jobs[: args.batch], 4)
        floor = engine.fast_path  # the reads arm patches the fast path's LoRA step
        mixed_runs, merged_runs, reads_runs = [], [], []
        for _ in range(args.repeats):  # interleaved, so a busy moment on the machine hits every arm
            mixed_runs.append(run_engine(engine, mixed_jobs, args.max_tokens))
            merged_runs.append(run_engine(m_engine, merged_jobs, args.max_tokens))
            if floor:
                with lora_reads_only():
                    reads_runs.append(run_engine(engine, mixed_jobs, args.max_tokens))
        engine.shutdown()
        m_engine.shutdown()

        # swapping: one request at a time, set_adapter before each
        swap = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), root / "adapters" / names[0],
                                         adapter_name=names[0])
        for name in names[1:]:
            swap.load_adapter(root / "adapters" / name, adapter_name=name)
        swap.eval()
        if args.device:
            swap.to(args.device)
        run_swapping(swap, engine.tokenizer, mixed_jobs[:2], 4)
        n_swap_req = max(args.requests // 4, len(names))  # it is slow: time a slice, report tokens/s
        t_swap, n_swap, c_swap = run_swapping(swap, engine.tokenizer, mixed_jobs[:n_swap_req], args.max_tokens)

    mixed, merged = summary(mixed_runs), summary(merged_runs)
    swapping, swapping_cpu = n_swap / t_swap, n_swap / c_swap
    model = args.model or f"tiny llama (hidden {args.hidden}, {args.layers} layers)"
    print(f"model: {model}; {args.requests} requests x "
          f"{args.max_tokens} tokens over {args.adapters} adapters (r=16, all projections), batch {args.batch}, "
          f"kernel {args.kernel}, weights {args.weights} ({resolve_weights(args.weights)}), "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'':9s}{'median tok/s':>13s} {'best tok/s':>11s} {'tok/CPU-s':>10s}")
    print(f"mixed    {mixed[0]:13.1f} {mixed[1]:11.1f} {mixed[2]:10.1f}")
    print(f"merged   {merged[0]:13.1f} {merged[1]:11.1f} {merged[2]:10.1f}")
    if reads_runs:
        reads = summary(reads_runs)
        print(f"reads    {reads[0]:13.1f} {reads[1]:11.1f} {reads[2]:10.1f}  (mixed, LoRA weights read, no LoRA maths)")
    print(f"swapping {swapping:13.1f} {'':11s} {swapping_cpu:10.1f}  ({n_swap_req} requests, once)")
    print(f"mixed / merged   = {mixed[0] / merged[0]:.2f}x median, {mixed[1] / merged[1]:.2f}x best, "
          f"{mixed[2] / merged[2]:.2f}x per CPU-second  (target >= 0.8)")
    if reads_runs:
        print(f"reads / merged   = {reads[0] / merged[0]:.2f}x median, {reads[1] / merged[1]:.2f}x best, "
              f"{reads[2] / merged[2]:.2f}x per CPU-second  (the ceiling of mixed / merged with exact fp32 LoRA here)")
        print(f"mixed / reads    = {mixed[0] / reads[0]:.2f}x median  (how close the LoRA kernel is to reading its "
              "weights)")
    print(f"mixed / swapping = {mixed[0] / swapping:.2f}x median, {mixed[2] / swapping_cpu:.2f}x per CPU-second  "
          "(target >= 3)")


if __name__ == "__main__":
    main()
