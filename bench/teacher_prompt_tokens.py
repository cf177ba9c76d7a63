"""Prompt tokens per teacher request: the built-in prompt as it is sent vs every example repeated in full.

    python bench/teacher_prompt_tokens.py [examples/contact-extraction/pipeline.yaml] [--inputs 8]

Builds the teacher messages of the first ``--inputs`` inputs of a pipeline config with
:class:`lorapipe.data.prompts.TeacherPrompt` and tokenizes them with the config's base model
tokenizer and chat template (the tokens a `lorapipe serve` teacher prefills). The baseline, built in
the same run, is the layout before issue 20: each worked example as a full copy of the instructions
plus its input. Prints, per layout, prompt tokens per row and the tokens every row shares with the
first one (what a server's prefix cache can reuse), and last the ratio of tokens per row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorapipe.config import load_config
from lorapipe.data.generate import file_inputs
from lorapipe.data.prompts import TeacherPrompt, builtin_teacher_prompt


def repeated(prompt: TeacherPrompt, text: str) -> list[dict[str, str]]:
    """The layout before: every example a full prompt (instructions + input) of its own."""
    out = []
    for ex in prompt.few_shot:
        out += [{"role": "user", "content": builtin_teacher_prompt(prompt.task, ex.input)},
                {"role": "assistant", "content": ex.output}]
    return out + [{"role": "user", "content": builtin_teacher_prompt(prompt.task, text)}]


def shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "examples/contact-extraction/pipeline.yaml"))
    ap.add_argument("--inputs", type=int, default=8)
    args = ap.parse_args()
    from lorapipe.models import load_tokenizer, resolve

    cfg = load_config(args.config, {"data.max_inputs": args.inputs})
    tok = load_tokenizer(resolve(cfg.base_model))
    prompt = TeacherPrompt.from_config(cfg)
    texts = [i["text"] for i in file_inputs(cfg)]
    per_layout = {}
    for name, build in (("repeated (before)", lambda t: repeated(prompt, t)), ("as sent now", prompt.messages)):
        # as `lorapipe serve` does it (Engine.encode_chat)
        ids = [tok(tok.apply_chat_template(build(t), tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for t in texts]
        lengths = [len(x) for x in ids]
        common = min(shared(ids[0], x) for x in ids[1:]) if len(ids) > 1 else 0
        per_layout[name] = statistics.mean(lengths)
        print(f"{name:>18}: {statistics.mean(lengths):7.1f} prompt tokens per row (min {min(lengths)}, max "
              f"{max(lengths)}), {common} shared by every row, {statistics.mean(lengths) - common:.1f} per row "
              f"beyond them ({len(texts)} inputs of {args.config})")
    before, after = per_layout.values()
    print(f"ratio before/after: {before / after:.2f}x tokens per row")


if __name__ == "__main__":
    main()
