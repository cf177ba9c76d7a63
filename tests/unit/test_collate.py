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


def test_lora_on_chosen_layers_only(tiny_model_dir):
    """`lora.layers_to_transform` adapts those layers only, and no gradient flows below the lowest one."""
    import torch
    from pydantic import ValidationError
    from transformers import AutoModelForCausalLM

    from lorapipe.train.lora import apply_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n = model.config.num_hidden_layers
    assert n >= 2
    peft_model = apply_lora(LoraConfig(layers_to_transform=[n - 1]), model)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and {name.split(".layers.")[1].split(".")[0] for name in trainable} == {str(n - 1)}

    seen = {}
    layers = peft_model.base_model.model.model.layers
    hooks = [layers[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in (0, n - 1)]
    ids = torch.tensor([[1, 5, 9, 13]])
    peft_model(input_ids=ids, labels=ids).loss.backward()
    for h in hooks:
        h.remove()
    first = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
    last = seen[n - 1][0] if isinstance(seen[n - 1], tuple) else seen[n - 1]
    assert not first.requires_grad and last.requires_grad

    with pytest.raises(ConfigError) as e:
        apply_lora(LoraConfig(layers_to_transform=[0, n, n + 1]), AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert (f"lora.layers_to_transform: layer(s) [{n}, {n + 1}] do not exist; this model has {n} decoder layers, "
            f"numbered 0-{n - 1}") in str(e.value)
    for bad in ([], [-1]):
        with pytest.raises(ValidationError, match="list the layer indices to adapt"):
            LoraConfig(layers_to_transform=bad)
    assert LoraConfig(layers_to_transform=[3, 1, 3]).layers_to_transform == [1, 3]


def test_an_assistant_turn_with_weight_0_is_context_only(tok):
    """OpenAI's `weight: 0`: the reply stays in the prompt but carries no loss; weight 1 is the default."""
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "one", "weight": 0},
                {"role": "user", "content": "b"}, {"role": "assistant", "content": "two", "weight": 1}]
    enc = encode_chat(tok, messages, max_length=512)
    assert tok.decode([t for t in enc["labels"] if t != IGNORE]) == "two" + tok.eos_token
    assert "one" in tok.decode(enc["input_ids"])
