"""Training throughput: lorapipe's train stage against plain TRL ``SFTTrainer`` + PEFT, side by side.

    python bench/train_throughput.py                                   # random Llama, vocab 49152 (~3 min)
    python bench/train_throughput.py --model smollm2-135m-instruct     # the embedded model, a few steps
    python bench/train_throughput.py --arm trl --arm lorapipe --arm lorapipe:loss_only_on_labels=false

Both arms train the same model (by default a random 4-layer, 256-wide Llama with SmolLM2's
49,152-token vocabulary and a byte-level BPE tokenizer trained here on the bench rows), on the same
contact-extraction chat rows (system prompt, a 20-120-word user message, a short JSON reply), with
the same LoRA config, optimizer, schedule, batch and number of optimizer steps (exactly one epoch),
in fp32 on the CPU (or the GPU when there is one):

* ``trl``: ``trl.SFTTrainer`` with ``peft_config`` and SFTConfig's defaults for prompt-completion
  chat rows: loss on the completion only, no packing, random batches, gradient checkpointing on
  (TRL's default), TRL's chunked log-prob head. Only ``bf16`` is set off, so both arms run fp32.
* ``lorapipe``: ``lorapipe.train.trainer.run`` with the default ``train`` section.

``ARM:key=value,...`` overrides SFTConfig fields (``trl``) or ``train`` fields (``lorapipe``), to
measure one switch at a time. Each arm runs in its own process (so peak RSS is its own); with
``--repeats N`` the arms run interleaved N times and the medians are compared.

Reported per arm: useful tokens/s (assistant tokens that carry loss) and all non-pad tokens/s over
the Trainer's training loop, the arm's wall time, its peak RSS, and the final eval loss, which is
computed the same way for both arms after training: the adapter is loaded with plain
``peft.PeftModel.from_pretrained`` and the token-mean cross-entropy of the assistant tokens of the
eval rows is taken from full logits. The ratio (lorapipe / trl useful tokens/s) is printed last.
Training time is read around ``Trainer.train`` in both arms, as wall and as process CPU time; the
CPU time is the steadier figure on a shared machine.

Measured on the 2-core dev box shared with other jobs (load 2-5), fp32, CPU seconds of training
(medians where repeated), useful tokens/s ratio over ``trl``:

    tiny (5 steps x 8 rows, 6454 tokens, 1120 useful)       CPU s    ratio
      trl (SFTTrainer defaults: checkpointing, TRL head)     41-49
      trl:gradient_checkpointing=false                       37-43    1.2
      lorapipe:loss_only_on_labels=false (full head)         17        2.6
      lorapipe (default)                                      5.5-6.3  6.9-8.8
      lorapipe:gradient_checkpointing=true                    8.0      5.4
      lorapipe:packing=true / group_by_length=false          ~5-6     within noise of the default
      --threads 0 (2 threads, load 2): trl 28.8 s, lorapipe 4.2 s wall: ratio 6.9
    smollm2-135m-instruct (2 steps x 8 rows, 2792 tokens, 692 useful)
      trl 83.6, trl:gradient_checkpointing=false 67.3, lorapipe:loss_only_on_labels=false 45.5,
      lorapipe 39.4 (ratio 2.0-2.1), lorapipe:packing=true 38.7; eval loss 0.4285 vs trl 0.4298

What the ratio is made of: no activation recomputation (TRL turns gradient checkpointing on by
default: +24-30 % compute), the LM head and cross-entropy on the assistant tokens only (on CPU,
TRL's chunked head scores every position, padding included, recomputes the logits in backward and
adds entropy/accuracy metrics; with a 49k vocabulary the head is ~80 % of the tiny model's FLOPs and
~20 % of SmolLM2's). Length grouping and packing remove padding, which is small here (batches of 4-8
rows of 100-220 tokens) and within the noise. ``torch.compile`` (not an arm: it compiled for ~3
minutes and then ran ~1.8x slower per step on this CPU) and bf16 (no bf16 units on this CPU) stay off.
Noise: the same arm's wall time varied up to 3x between runs with 2 OpenMP threads on the busy
machine (threads spin-waiting on taken cores), hence ``--threads 1`` by default; CPU times varied
by about 10-20 %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEM = ("Extract the contact details from the user's message. Reply with JSON only, with the keys "
          "name, email and phone; use null for a missing field.")
FIRST = ("Ann Bob Carla Dmitri Emeka Fatima Gustavo Hana Ivan Julia Kenji Lena Mateo Nora Omar Priya Quinn "
         "Rosa Sven Tariq Uma Victor Wen Ximena Yusuf Zoe")
LAST = ("Lee Okafor Schmidt Nakamura Rossi Haddad Silva Kowalski Novak Dubois Patel Kim Garcia Murphy "
        "Jensen Costa Ibrahim Larsen Moreau Tanaka")
FILLER = ("thanks for the quick reply about the invoice we discussed last week please let me know if the "
          "meeting on thursday still works for your team I will bring the updated figures and the draft "
          "contract so we can review the open points together before the end of the quarter also the "
          "shipment arrived with two damaged boxes and we need a replacement as soon as possible")
TINY = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 49152}
DEFAULTS = {"tiny": {"steps": 5, "batch_size": 4, "grad_accum": 2, "eval_rows": 16, "lr": 2e-3},
            "smollm2-135m-instruct": {"steps": 2, "batch_size": 4, "grad_accum": 2, "eval_rows": 8, "lr": 2e-4}}


# ----------------------------------------------------------------------------------------- data
def contact_row(rng: random.Random) -> dict[str, Any]:
    """A contact-extraction chat row: system prompt, a 20-120-word message, a JSON reply."""
    from lorapipe.data.formats import make_row

    first, last = rng.choice(FIRST.split()), rng.choice(LAST.split())
    email = f"{first.lower()}.{last.lower()}@{rng.choice(['example.com', 'mail.org', 'corp.net'])}"
    phone = (f"+{rng.randint(1, 49)} {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
             if rng.random() < 0.8 else None)
    filler = FILLER.split()
    words = [rng.choice(filler) for _ in range(rng.randint(20, 120) - 8)]
    signature = f"Best, {first} {last}. Email {email}" + (f", phone {phone}." if phone else ".")
    at = rng.randint(0, len(words))
    user = " ".join(words[:at] + [signature] + words[at:])
    reply = json.dumps({"name": f"{first} {last}", "email": email, "phone": phone})
    return make_row(SYSTEM, user, reply, origin="bench")


def bench_tokenizer(rows: list[dict[str, Any]], vocab_size: int = 2048):
    """A ChatML byte-level BPE trained on the rows: SmolLM2-like token counts, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lorapipe.testing import CHATML_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([m["content"] for r in rows for m in r["messages"]], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write train.jsonl / eval.jsonl and the model directory; return what the arms need."""
    import torch

    from lorapipe import models
    from lorapipe.manifest import write_jsonl
    from lorapipe.train.collate import encode_rows

    rng = random.Random(args.seed)
    n_train = args.steps * args.batch_size * args.grad_accum  # exactly one epoch for every arm
    rows = [contact_row(rng) for _ in range(n_train + args.eval_rows)]
    train, evals = rows[:n_train], rows[n_train:]
    write_jsonl(work / "train.jsonl", train)
    write_jsonl(work / "eval.jsonl", evals)
    if args.model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        model_dir = work / "model"
        tok = bench_tokenizer(rows)
        cfg = LlamaConfig(**TINY, max_position_embeddings=1024, tie_word_embeddings=True,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(args.seed)
        LlamaForCausalLM(cfg).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    else:
        model_dir = models.resolve(args.model).path
        tok = models.load_tokenizer(models.resolve(args.model))
    enc, _ = encode_rows(tok, train, args.max_seq_length)
    return {"model_dir": str(model_dir), "train": str(work / "train.jsonl"), "eval": str(work / "eval.jsonl"),
            "tokens": sum(len(e["input_ids"]) for e in enc),
            "label_tokens": sum(sum(x != -100 for x in e["labels"]) for e in enc), "rows": len(enc)}


# ----------------------------------------------------------------------------------------- arms
def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_arm(spec: str) -> tuple[str, dict[str, Any]]:
    kind, _, rest = spec.partition(":")
    if kind not in ("trl", "lorapipe"):
        raise SystemExit(f"--arm {spec}: the arm must be `trl` or `lorapipe`, optionally `:key=value,...`")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"--arm {spec}: `{item}` is not key=value")
        overrides[key.strip()] = _value(val.strip())
    return kind, overrides


def lorapipe_config(job: dict[str, Any]):
    from lorapipe.config import LoraConfig, PipelineConfig, TrainConfig

    kw = {"max_steps": job["steps"], "per_device_train_batch_size": job["batch_size"],
          "per_device_eval_batch_size": job["batch_size"], "gradient_accumulation_steps": job["grad_accum"],
          "learning_rate": job["lr"], "max_seq_length": job["max_seq_length"], "seed": job["seed"],
          "logging_steps": job["steps"], "eval_steps": 10**6, "save_steps": 10**6, "load_best_model_at_end": False}
    if job["kind"] == "lorapipe":
        kw.update(job["overrides"])  # validated: a typo in an override is an error
    train = TrainConfig(**kw)
    return PipelineConfig(task={"name": "bench", "description": "contact extraction", "system_prompt": SYSTEM},
                          base_model=job["model_dir"], data={"train_file": job["train"]},
                          lora=LoraConfig(), train=train)


def run_trl(job: dict[str, Any], out: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lorapipe.data.formats import read_rows
    from lorapipe.train.lora import peft_config

    cfg = lorapipe_config(job)
    t = cfg.train
    tok = AutoTokenizer.from_pretrained(job["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    rows = read_rows(job["train"])
    data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    warmup = max(0, round(t.warmup_ratio * t.max_steps))
    sft = {"output_dir": str(out / "trl"), "max_steps": t.max_steps,
           "per_device_train_batch_size": t.per_device_train_batch_size,
           "gradient_accumulation_steps": t.gradient_accumulation_steps, "learning_rate": t.learning_rate,
           "weight_decay": t.weight_decay, "lr_scheduler_type": t.lr_scheduler_type, "warmup_steps": warmup,
           "max_length": t.max_seq_length, "seed": t.seed, "data_seed": t.seed, "logging_steps": t.logging_steps,
           "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "bf16": False,
           "use_cpu": not torch.cuda.is_available(), "disable_tqdm": True}
    sft.update(job["overrides"])
    trainer = SFTTrainer(model=model, args=SFTConfig(**sft), train_dataset=data, processing_class=tok,
                         peft_config=peft_config(cfg.lora, model))
    result = trainer.train()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer.model.save_pretrained(out / "adapter")
    ds = trainer.train_dataset
    own_labels = sum(sum(x != -100 for x in row) for row in ds["labels"]) if "labels" in ds.column_names else None
    return {"train_runtime_s": result.metrics["train_runtime"], "steps": result.global_step,
            "train_loss": result.training_loss, "peak_rss_mb": rss, "own_label_tokens": own_labels,
            "own_tokens": sum(len(x) for x in ds["input_ids"])}


def run_lorapipe(job: dict[str, Any], out: Path) -> dict[str, Any]:
    from lorapipe.train import trainer

    cfg = lorapipe_config(job)
    manifest = trainer.run(cfg, Path(job["train"]), None, out / "lorapipe", resume=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = manifest.metrics
    return {"train_runtime_s": m["train_runtime_s"], "steps": m["global_steps"], "train_loss": m["train_loss"],
            "peak_rss_mb": rss, "own_label_tokens": m["train_label_tokens"], "own_tokens": m["train_tokens"],
            "adapter": str(out / "lorapipe" / "adapter")}


def reference_eval_loss(model_dir: str, adapter: str, eval_file: str, max_len: int, batch: int) -> float:
    """Token-mean CE of the eval rows' assistant tokens, full logits, adapter loaded by plain PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorapipe.data.formats import read_rows
    from lorapipe.train.collate import DataCollator, encode_rows

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter)
    model.eval()
    enc, _ = encode_rows(tok, read_rows(eval_file), max_len)
    enc.sort(key=lambda e: len(e["input_ids"]))
    collate = DataCollator(tok.pad_token_id)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(enc), batch):
            b = collate(enc[i:i + batch])
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
            labels = b["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                                       reduction="sum").item()
            count += int((labels != -100).sum())
    return total / count


def _time_training(clock: dict[str, float]) -> None:
    """Wrap ``Trainer.train`` (both arms call it) to read wall and process CPU time around it."""
    import transformers

    original = transformers.Trainer.train

    def train(self, *a, **kw):
        w, c = time.perf_counter(), time.process_time()
        try:
            return original(self, *a, **kw)
        finally:
            clock["train_wall_s"] = time.perf_counter() - w
            clock["train_cpu_s"] = time.process_time() - c

    transformers.Trainer.train = train


def child(job: dict[str, Any]) -> None:
    import logging

    import torch

    logging.disable(logging.WARNING)
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    t0 = time.perf_counter()
    clock: dict[str, float] = {}
    _time_training(clock)
    out = Path(job["out"])
    res = run_trl(job, out) if job["kind"] == "trl" else run_lorapipe(job, out)
    res.update(clock, threads=torch.get_num_threads())
    res["eval_loss"] = reference_eval_loss(job["model_dir"], res.pop("adapter", str(out / "adapter")), job["eval"],
                                           job["max_seq_length"], job["batch_size"])
    res["wall_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(res), flush=True)


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    if job["threads"]:  # OpenMP reads this when torch loads, before the child can set anything
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(job["threads"])
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                          check=False, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"arm {job['name']} failed (exit {proc.returncode})")
    return json.loads(line[len("RESULT "):])


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="`tiny` (random Llama, vocab 49152) or smollm2-135m-instruct")
    p.add_argument("--steps", type=int, help="optimizer steps (= one epoch)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--eval-rows", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="run the arms interleaved this many times")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads in both arms (0: torch's default, one per core). 1 by default: "
                        "on a shared machine OpenMP threads spin-waiting on busy cores make wall times swing "
                        "several-fold, whichever arm runs")
    p.add_argument("--arm", action="append", help="trl | lorapipe, optionally :key=value,... (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    for k, v in DEFAULTS["tiny" if args.model == "tiny" else "smollm2-135m-instruct"].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    arms = args.arm or ["trl", "lorapipe"]
    specs = {a: parse_arm(a) for a in arms}

    with tempfile.TemporaryDirectory(prefix="lorapipe-bench-") as tmp:
        work = Path(tmp)
        data = prepare(args, work)
        print(f"model={args.model} rows={data['rows']} steps={args.steps} batch={args.batch_size}x{args.grad_accum} "
              f"tokens={data['tokens']} label_tokens={data['label_tokens']} threads={args.threads or 'default'} "
              f"load={os.getloadavg()[0]:.1f}", flush=True)
        results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
        for rep in range(args.repeats):
            order = arms if rep % 2 == 0 else arms[::-1]  # ABBA: drift in the machine's load cancels out
            for a in order:
                kind, overrides = specs[a]
                job = {"kind": kind, "overrides": overrides, "name": a, "out": str(work / f"{len(results[a])}-{a}"),
                       "model_dir": data["model_dir"], "train": data["train"], "eval": data["eval"],
                       "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                       "lr": args.lr, "seed": args.seed, "max_seq_length": args.max_seq_length,
                       "threads": args.threads}
                r = run_arm(job)
                r["useful_tok_s"] = data["label_tokens"] / r["train_wall_s"]
                r["tok_s"] = data["tokens"] / r["train_wall_s"]
                r["useful_tok_cpu_s"] = data["label_tokens"] / r["train_cpu_s"]
                results[a].append(r)
                print(f"  [{rep + 1}/{args.repeats}] {a:<40} train {r['train_wall_s']:6.1f} s wall "
                      f"{r['train_cpu_s']:6.1f} s cpu  {r['useful_tok_s']:6.1f} useful tok/s  "
                      f"eval_loss {r['eval_loss']:.4f}", flush=True)
    report(args, data, arms, results)


def report(args: argparse.Namespace, data: dict[str, Any], arms: list[str],
           results: dict[str, list[dict[str, Any]]]) -> None:
    keys = ("useful_tok_s", "tok_s", "useful_tok_cpu_s", "train_wall_s", "wall_s", "peak_rss_mb", "eval_loss")
    med = {a: {k: statistics.median(r[k] for r in results[a]) for k in keys} for a in arms}
    print(f"\n{'arm':<40} {'useful tok/s':>12} {'tok/s':>7} {'useful/cpu-s':>12} {'train s':>8} {'wall s':>7} "
          f"{'RSS MB':>7} {'eval loss':>9} {'spread':>7}")
    for a in arms:
        m = med[a]
        speeds = [r["useful_tok_s"] for r in results[a]]
        spread = (max(speeds) - min(speeds)) / statistics.median(speeds)
        print(f"{a:<40} {m['useful_tok_s']:12.1f} {m['tok_s']:7.1f} {m['useful_tok_cpu_s']:12.1f} "
              f"{m['train_wall_s']:8.1f} {m['wall_s']:7.1f} {m['peak_rss_mb']:7.0f} {m['eval_loss']:9.4f} "
              f"{spread:7.0%}")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (spread: (max - min) / median useful tok/s "
          "over the repeats)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "data": data,
                                         "results": results, "median": med}, indent=1))
    base = next((a for a in arms if a.startswith("trl")), None)
    ours = [a for a in arms if a.startswith("lorapipe")]
    if base is None or not ours:
        return
    for a in ours:
        ok = med[a]["eval_loss"] <= med[base]["eval_loss"] * 1.02
        print(f"eval loss {a} {med[a]['eval_loss']:.4f} vs {base} {med[base]['eval_loss']:.4f}: "
              f"{'ok (within +2 %)' if ok else 'WORSE by more than 2 %'}; useful tokens per CPU-second ratio "
              f"{med[a]['useful_tok_cpu_s'] / med[base]['useful_tok_cpu_s']:.2f}")
    for a in ours:
        print(f"useful-tokens/s ratio {a} / {base}: {med[a]['useful_tok_s'] / med[base]['useful_tok_s']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
