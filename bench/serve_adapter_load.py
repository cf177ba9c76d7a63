"""Hot-swap cost: time to load a new r=16 adapter into a running server vs time to load the base model.

    python bench/serve_adapter_load.py [--trials 20] [--model smollm2-135m-instruct]

A running engine loads a fresh adapter (a new name each trial, so nothing is cached) the way the
admin API and the directory watch do: verify every file's sha256 against its manifest, read the
safetensors, add the LoRA layers on the scheduler thread; then unloads it. The base is loaded the
way `lorapipe serve` starts (resolve + from_pretrained + tokenizer). Prints p50 and p90 of both and,
last, the adapter's p50 with its target (<= 100 ms) and how many adapter loads fit in one base load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from lorapipe.models import load
from lorapipe.serve.engine import Engine
from lorapipe.testing import build_tiny_adapter, build_tiny_model

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size of the tiny base")
    ap.add_argument("--layers", type=int, default=4, help="layers of the tiny base")
    ap.add_argument("--model", default=None, help="base model spec (default: a bigger tiny random Llama)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 avoids OpenMP thrashing on a machine shared with other jobs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model:
            from lorapipe.models import resolve

            spec = args.model
            base_dir = resolve(spec).path
        else:
            base_dir = build_tiny_model(root / "base", hidden_size=args.hidden, num_layers=args.layers, num_heads=8,
                                        num_kv_heads=4, intermediate_size=args.hidden * 8 // 3 // 32 * 32)
            spec = str(base_dir)
        dirs = [build_tiny_adapter(base_dir, root / "adapters" / f"new{i}", r=args.rank, seed=i,
                                   target_modules=ALL) for i in range(args.trials + 1)]

        base_times = []
        for _ in range(max(3, args.trials // 4)):
            t0 = time.perf_counter()
            model, tok, info = load(spec, device=args.device)
            base_times.append(time.perf_counter() - t0)
        engine = Engine(model, tok, base_name="base", base_identity=info.identity()).start()
        engine.load("warmup", dirs[0])  # wraps the base in a PeftModel once: not a per-adapter cost
        engine.unload("warmup")
        load_times = []
        for i, d in enumerate(dirs[1:]):
            t0 = time.perf_counter()
            engine.load(f"new{i}", d)
            load_times.append(time.perf_counter() - t0)
            engine.unload(f"new{i}")
        engine.shutdown()

    a50, b50 = statistics.median(load_times), statistics.median(base_times)
    model = args.model or f"tiny llama (hidden {args.hidden}, {args.layers} layers)"
    print(f"model: {model}; adapter r={args.rank} on every projection")
    print(f"base load     p50 {b50 * 1000:8.1f} ms   p90 {pct(base_times, 0.9) * 1000:8.1f} ms  "
          f"({len(base_times)} loads)")
    print(f"adapter load  p50 {a50 * 1000:8.1f} ms   p90 {pct(load_times, 0.9) * 1000:8.1f} ms  "
          f"({len(load_times)} loads)")
    print(f"base / adapter = {b50 / a50:.1f}x")
    print(f"adapter load p50 = {a50 * 1000:.1f} ms  (target <= 100 ms)")


if __name__ == "__main__":
    main()
