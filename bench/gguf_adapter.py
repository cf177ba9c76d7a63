"""An adapter exported with `lorapipe export --format gguf`, in llama.cpp vs lorapipe, on eval rows.

    python bench/gguf_adapter.py --run examples/contact-extraction/runs/contact-extraction [--rows 60]

Exports RUN/train/adapter to a temporary GGUF, answers the first --rows rows of RUN/split/eval.jsonl
greedily (the A/B's messages: the row's system prompt or the task's, and its user turn) with
lorapipe (transformers + PEFT, batch 8, as the A/B; or the A/B's recorded answers when
RUN/evaluate/answers.jsonl exists) and with llama.cpp (the base's GGUF + the adapter, batch 1,
--threads), and prints the identical-answer rate, how many llama.cpp answers
differ from its base's, and decode speed: llama.cpp with / without the adapter, and lorapipe at
batch 1 on the same prompts (ratios last). Needs llama-cpp-python (the `llamacpp` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorapipe import export as ex
from lorapipe import generation, models
from lorapipe.llamacpp import ADAPTER_FILE, open_llama


def llamacpp_answers(llama_cpp, model_path: str, lora: str | None, prompts: list[list[int]], max_new: int,
                     threads: int) -> tuple[list[str], float, int]:
    """Greedy answers, decode seconds (after the first token) and decoded tokens, at batch 1."""
    llm = open_llama(model_path, lora_path=lora, n_ctx=1024, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    answers, decode_s, decode_tokens = [], 0.0, 0
    try:
        for ids in prompts:
            out: list[int] = []
            first = 0.0
            for token in llm.generate(ids, top_k=1, temp=0.0):
                if not out:
                    first = time.perf_counter()
                if token == llm.token_eos() or len(out) >= max_new:
                    break
                out.append(token)
            decode_s += time.perf_counter() - first
            decode_tokens += len(out)  # each token after the first yield cost one decode step
            answers.append(llm.detokenize(out).decode("utf-8", errors="replace").strip())
    finally:
        llm.close()
    return answers, decode_s, decode_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--run", type=Path, required=True, help="run directory with train/adapter and split/eval.jsonl")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=96, help="the A/B's evaluate.max_new_tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf-base", default="auto", help="lorapipe export --gguf-base: auto (f16 for a quantised "
                    "GGUF), as-is (the quantised GGUF itself), f16 or f32 (its weights unquantised)")
    ap.add_argument("--hf-batch1-rows", type=int, default=8, help="rows for lorapipe's batch-1 speed (slow)")
    args = ap.parse_args()
    import llama_cpp
    import torch

    torch.set_num_threads(args.threads)
    adapter = args.run / "train" / "adapter"
    manifest = json.loads((adapter / "manifest.json").read_text())
    system = manifest["config"]["task"]["system_prompt"]
    spec = manifest["extra"]["base_model"]["spec"]
    rows = [json.loads(line) for line in (args.run / "split" / "eval.jsonl").read_text().splitlines() if line]
    recorded: dict[str, str] = {}
    if (args.run / "evaluate" / "answers.jsonl").is_file():  # the A/B's own tuned answers: no need to regenerate
        ab = json.loads((args.run / "evaluate" / "ab.json").read_text())
        args.max_new_tokens = ab["decoding"]["max_new_tokens"]
        for line in (args.run / "evaluate" / "answers.jsonl").read_text().splitlines():
            ex_row = json.loads(line)
            recorded[ex_row["id"]] = ex_row["tuned"]["output"]
        rows = [r for r in rows if r.get("meta", {}).get("id") in recorded]
        print(f"using the A/B's recorded tuned answers ({len(rows)} rows, max_new_tokens {args.max_new_tokens})")
    rows = rows[:args.rows]
    convs = []
    for r in rows:
        msgs = [dict(m) for m in r["messages"][:-1]]
        if not msgs or msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system})
        convs.append(msgs)

    n = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        m = ex.run(adapter, Path(tmp) / "gguf", mode="gguf", gguf_base=args.gguf_base)
        lora, base_gguf = str(Path(tmp) / "gguf" / ADAPTER_FILE), m.extra["base_gguf"]
        model, tok, info = models.load(spec)
        tuned = models.load_adapter(model, adapter, base=info)
        t0 = time.perf_counter()
        if recorded:
            ours = [recorded[r["meta"]["id"]] for r in rows]
        else:
            ours = [g.text for g in generation.generate(tuned, tok, convs, max_new_tokens=args.max_new_tokens)]
            print(f"rows: {n}; lorapipe (batch 8, as the A/B) answered them in {time.perf_counter() - t0:.1f} s",
                  flush=True)
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in generation.render_prompts(tok, convs)]
        theirs, lt_s, lt_n = llamacpp_answers(llama_cpp, base_gguf, lora, ids, args.max_new_tokens, args.threads)
        same = sum(a == b for a, b in zip(ours, theirs))
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                print(f"row {i} differs:\n  lorapipe:  {a!r}\n  llama.cpp: {b!r}")
        print(f"identical answers, llama.cpp+adapter vs lorapipe: {same}/{n} = {same / n:.1%}", flush=True)
        base, lb_s, lb_n = llamacpp_answers(llama_cpp, base_gguf, None, ids, args.max_new_tokens, args.threads)
        print(f"llama.cpp+adapter answers that differ from llama.cpp base's: "
              f"{sum(a != b for a, b in zip(theirs, base))}/{n}", flush=True)
        lt, lb = lt_n / lt_s, lb_n / lb_s
        print(f"llama.cpp decode, batch 1, {args.threads} threads: base {lb:.1f} tok/s, with adapter {lt:.1f} tok/s "
              f"({lt / lb:.2f}x)", flush=True)
        k = min(args.hf_batch1_rows, n)
        if k:
            t0 = time.perf_counter()
            b1 = generation.generate(tuned, tok, convs[:k], max_new_tokens=args.max_new_tokens, batch_size=1)
            hf1 = sum(g.completion_tokens for g in b1) / (time.perf_counter() - t0)
            print(f"lorapipe (transformers+PEFT) with adapter, batch 1, incl. prefill: {hf1:.1f} tok/s over {k} rows")
            print(f"ratio llama.cpp+adapter / lorapipe at batch 1: {lt / hf1:.2f}x")


if __name__ == "__main__":
    main()
