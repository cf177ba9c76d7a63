"""Loss on the assistant tokens only: decode the unmasked tokens and compare with the reply."""

from __future__ import annotations

import pytest

from lorapipe.config import LoraConfig
from lorapipe.errors import ConfigError
from lorapipe.testing import build_tokenizer
from lorapipe.train.collate import IGNORE, DataCollator, encode_chat
from lorapipe.train.lora import check_target_modules

CONVERSATIONS = [
    [{"role": "system", "content": "Extract JSON."}, {"role": "user", "content": "Hi, I'm Zoé (zoe@x.fr)"},
     {"role": "assistant", "content": '{"name": "Zoé", "email": "zoe@x.fr", "phone": null}'}],
    [{"role": "user", "content": "no system prompt"}, {"role": "assistant", "content": "fine"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "one"},
     {"role": "user", "content": "b"}, {"role": "assistant", "content": "two"}],
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_only_assistant_tokens_carry_labels(tok, messages):
    enc = encode_chat(tok, messages, max_length=512)
    kept = [t for t in enc["labels"] if t != IGNORE]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    # Each reply is followed by the end-of-turn token, which teaches the model to stop.
    assert tok.decode(kept) == "".join(r + tok.eos_token for r in replies)
    assert tok.decode(kept, skip_special_tokens=True) == "".join(replies)
    masked = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE]
    for m in messages:  # every non-assistant turn is masked
        if m["role"] != "assistant":
            assert m["content"] in tok.decode(masked)


def test_truncation_is_reported(tok):
    enc = encode_chat(tok, CONVERSATIONS[0], max_length=8)
    assert enc["truncated"] and enc["n_labels"] == 0 and len(enc["input_ids"]) == 8


def test_collator_pads_right_with_ignored_labels():
    batch = DataCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                          {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_target_modules_checked_against_the_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert check_target_modules(LoraConfig(), model) == LoraConfig().target_modules
    assert check_target_modules(LoraConfig(target_modules="all-linear"), model) == "all-linear"
    with pytest.raises(ConfigError) as e:
        check_target_modules(LoraConfig(target_modules=["q_prj", "attn"]), model)
    msg = str(e.value)
    assert "lora.target_modules: `q_prj` is not a Linear module of this model; did you mean `q_proj`?" in msg
    assert "`attn` is not a Linear module" in msg and "its Linear modules are: down_proj, gate_proj" in msg
