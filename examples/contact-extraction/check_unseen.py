"""After the demo: how the adapter does on messages that no generator wrote.

    python examples/contact-extraction/check_unseen.py [--adapter DIR] [--base] [--show] [--holdout]

The demo's eval split comes from the same generator (make_inputs.py) as its training data, so it
flatters the adapter. ``unseen.jsonl`` holds 60 realistic messages written one by one, not from
templates (emails with a greeting to someone else and colleagues in cc, replies above a quoted
thread, live chats, call notes, texts in six languages...), with their true contact. The pipeline
never reads this file. The script answers them with the adapter (and with ``--base``, the prompted
base model) and prints the exact-match rate (parsed JSON equal to the reference) and which fields
were missed. ``--holdout`` scores the generated messages of ``inputs.jsonl`` that the demo does not
use (those after ``data.max_inputs``) instead: same generator, no training row made from them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent
KEYS = ("name", "email", "phone")


def score(outputs: list[str], refs: list[dict]) -> tuple[int, Counter, list[int]]:
    """(exact matches, misses per field, indices of the wrong answers); exact match as the A/B counts it."""
    from lorapipe.evaluate.ab import parse_json

    exact, misses, wrong = 0, Counter(), []
    for i, (out, ref) in enumerate(zip(outputs, refs)):
        want = {k: ref[k] for k in KEYS}
        try:
            got = parse_json(out)
        except ValueError:
            got = None
        if got == want:
            exact += 1
            continue
        wrong.append(i)
        misses.update(k for k in KEYS if not isinstance(got, dict) or got.get(k) != want[k])
        misses["invalid JSON"] += got is None
    return exact, misses, wrong


def generated_holdout(cfg) -> list[dict]:
    """The rows of ``data.inputs`` after ``data.max_inputs`` (never read by the demo), with their references."""
    from lorapipe.data.formats import read_jsonl

    path = cfg.resolve(cfg.data.inputs)
    inputs = read_jsonl(path)
    refs = {r["id"]: r for r in read_jsonl(path.with_name("references.jsonl"))}
    return [{**r, **{k: refs[r["id"]][k] for k in KEYS}} for r in inputs[cfg.data.max_inputs or len(inputs):]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=HERE / "runs" / "contact-extraction" / "train" / "adapter")
    ap.add_argument("--config", type=Path, default=HERE / "pipeline.yaml")
    ap.add_argument("--messages", type=Path, default=HERE / "unseen.jsonl")
    ap.add_argument("--base", action="store_true", help="also answer with the prompted base model")
    ap.add_argument("--show", action="store_true", help="print every wrong answer")
    ap.add_argument("--holdout", action="store_true",
                    help="score the unused generated inputs (after data.max_inputs) instead of --messages")
    ap.add_argument("--batch-size", type=int, default=12)
    a = ap.parse_args()

    from lorapipe import generation, models
    from lorapipe.config import load_config
    from lorapipe.data.formats import read_jsonl

    if not (a.adapter / "adapter_config.json").is_file():
        raise SystemExit(f"{a.adapter}: no adapter here; run the demo first "
                         "(lorapipe run examples/contact-extraction/pipeline.yaml) or pass --adapter DIR")
    cfg = load_config(a.config)
    refs = generated_holdout(cfg) if a.holdout else read_jsonl(a.messages)
    source = "the generated inputs after data.max_inputs" if a.holdout else a.messages.name
    convs = [[{"role": "system", "content": cfg.task.system_prompt}, {"role": "user", "content": r["text"]}]
             for r in refs]
    model, tok, _ = models.load(cfg.base_model)
    arms = {}
    if a.base:
        arms["base + prompt"] = [g.text for g in generation.generate(model, tok, convs, max_new_tokens=64,
                                                                       batch_size=a.batch_size)]
    model = models.load_adapter(model, a.adapter)
    arms["adapter"] = [g.text for g in generation.generate(model, tok, convs, max_new_tokens=64,
                                                             batch_size=a.batch_size)]
    for arm, outputs in arms.items():
        exact, misses, wrong = score(outputs, refs)
        print(f"{arm}: exact match {exact}/{len(refs)} = {exact / len(refs):.0%} on {source}; "
              f"misses by field: {dict(misses) or 'none'}")
        if a.show:
            for i in wrong:
                print(f"  {refs[i]['id']}: want {json.dumps({k: refs[i][k] for k in KEYS}, ensure_ascii=False)}\n"
                      f"  {'':{len(refs[i]['id'])}}  got  {outputs[i]}")


if __name__ == "__main__":
    main()
