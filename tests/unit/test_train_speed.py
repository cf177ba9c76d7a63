"""The train stage's speed paths compute the same numbers as the plain ones.

* packed micro-batches (one row, restarting position ids) give every example the loss it has when
  padded, through lorapipe's per-row attention and through transformers' block-diagonal mask;
* the label-only head (LM head + cross-entropy on labelled positions only) gives the full head's
  loss and gradients, through PEFT, padded or packed, with or without ``num_items_in_batch``;
* adapters trained with any combination of the switches are the same adapter, load in plain PEFT
  and change the model's logits.
"""

from __future__ import annotations

import json

import pytest
import torch

from lorapipe.train.collate import IGNORE, DataCollator
from lorapipe.train.loss import (
    FLAG,
    disable_label_only_loss,
    enable_label_only_loss,
    head_cross_entropy,
    label_only_unsupported,
)
from lorapipe.train.packing import (
    ATTN_NAME,
    PackingCollator,
    packed_attention_unsupported,
    restore_attention,
    use_packed_attention,
)

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _features(seed: int = 1, lengths=(7, 12, 5, 9)) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, 380, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (n // 2) + ids[n // 2:]})
    return out


def _peft_model(tiny_model_dir, attn: str = "sdpa", seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn)
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=ALL, lora_dropout=0.0,
                                            task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # non-zero B, so LoRA takes part in every number below
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def _per_example_loss(logits: torch.Tensor, labels: torch.Tensor, bounds: list[tuple[int, int, int]]) -> list[float]:
    """Mean next-token loss of each example; ``bounds`` = (row, start, end) in the batch tensors."""
    out = []
    for row, a, b in bounds:
        lg, lb = logits[row, a:b - 1], labels[row, a + 1:b]
        out.append(torch.nn.functional.cross_entropy(lg, lb, ignore_index=IGNORE).item())
    return out


# ----------------------------------------------------------------------------------------- packing
def test_packing_collator_layout():
    feats = _features(lengths=(3, 2))
    batch = PackingCollator()(feats)
    assert batch["input_ids"].tolist() == [feats[0]["input_ids"] + feats[1]["input_ids"]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["max_length_q"] == 3
    # each row's first label is masked: no token learns to predict the next row's first token
    assert batch["labels"][0, 3].item() == IGNORE
    assert batch["labels"][0].tolist()[4] == feats[1]["labels"][1]


@pytest.mark.parametrize("attn", [ATTN_NAME, "sdpa", "eager"])
def test_packed_and_padded_give_each_example_the_same_loss(tiny_model_dir, attn):
    feats = _features()
    model = _peft_model(tiny_model_dir, attn="eager" if attn == "eager" else "sdpa").eval()
    padded, packed = DataCollator(0)(feats), PackingCollator()(feats)
    previous = use_packed_attention(model) if attn == ATTN_NAME else None
    with torch.no_grad():
        lp = model(**{k: v for k, v in padded.items() if k != "labels"}, use_cache=False).logits
        lk = model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits
    restore_attention(model, previous)
    lengths = [len(f["input_ids"]) for f in feats]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    want = _per_example_loss(lp, padded["labels"], [(i, 0, n) for i, n in enumerate(lengths)])
    got = _per_example_loss(lk, packed["labels"], [(0, s, s + n) for s, n in zip(starts, lengths)])
    assert got == pytest.approx(want, rel=1e-5)
    # and the batch losses agree too (same labelled tokens, same mean)
    with torch.no_grad():
        assert model(**packed, use_cache=False).loss.item() == pytest.approx(
            model(**padded, use_cache=False).loss.item(), rel=1e-5)


def test_packed_attention_switch_is_restored(tiny_model_dir):
    model = _peft_model(tiny_model_dir)
    previous = use_packed_attention(model)
    assert previous == "sdpa" and model.get_base_model().config._attn_implementation == ATTN_NAME
    restore_attention(model, previous)
    assert model.get_base_model().config._attn_implementation == "sdpa"


def test_sliding_window_models_keep_their_attention(tiny_model_dir):
    model = _peft_model(tiny_model_dir)
    model.get_base_model().config.sliding_window = 16
    assert packed_attention_unsupported(model.get_base_model()) == "it uses sliding-window attention"
    assert use_packed_attention(model) is None


# ----------------------------------------------------------------------------------------- label-only head
def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("layout,num_items", [("padded", None), ("padded", 40), ("packed", None), ("packed", 17)])
def test_label_only_head_matches_the_full_head(tiny_model_dir, layout, num_items):
    feats = _features(seed=2)
    batch = DataCollator(0)(feats) if layout == "padded" else PackingCollator()(feats)
    model = _peft_model(tiny_model_dir)
    if layout == "packed":
        use_packed_attention(model)
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    full = model(**batch, use_cache=False, **extra).loss
    full.backward()
    want = _grads(model)
    model.zero_grad()
    assert enable_label_only_loss(model)
    out = model(**batch, use_cache=False, **extra, **{FLAG: True})
    assert out.logits is None  # no logits were built
    out.loss.backward()
    got = _grads(model)
    assert out.loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert sorted(got) == sorted(want) and len(got) == 2 * 7 * 2  # A and B of 7 projections x 2 layers
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    disable_label_only_loss(model)
    assert model(**batch, use_cache=False, **{FLAG: True}).logits is not None  # the original forward again


def test_label_only_eval_loss_equals_full_eval_loss(tiny_model_dir):
    feats = _features(seed=3)
    model = _peft_model(tiny_model_dir).eval()
    batch = DataCollator(0)(feats)
    with torch.no_grad():
        full = model(**batch, use_cache=False).loss.item()
        enable_label_only_loss(model)
        fast = model(**batch, use_cache=False, **{FLAG: True}).loss.item()
    assert fast == pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("with_bias", [False, True])
def test_head_cross_entropy_gradients_including_a_trainable_head(with_bias, monkeypatch):
    import lorapipe.train.loss as loss_mod

    monkeypatch.setattr(loss_mod, "TILE_ELEMENTS", 7 * 50)  # several tiles of 7 rows
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True) if with_bias else None
    t = torch.randint(0, 50, (30,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ w.t() + (b if b is not None else 0), t, reduction="sum")
    ref.backward()
    want = [x.grad.clone() for x in (h, w, b) if x is not None]
    for x in (h, w, b):
        if x is not None:
            x.grad = None
    got_loss = head_cross_entropy(h, w, b, t)
    (3 * got_loss).backward()
    assert got_loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for x, gw in zip([x for x in (h, w, b) if x is not None], want):
        torch.testing.assert_close(x.grad, 3 * gw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attr,value,reason", [
    ("final_logit_softcapping", 30.0, "its config sets `final_logit_softcapping`"),
    ("logit_scale", 0.5, "its config sets `logit_scale`"),
    ("output_router_logits", True, "its forward adds a router auxiliary loss"),
])
def test_models_the_label_only_head_does_not_fit_keep_the_full_head(tiny_model_dir, attr, value, reason):
    model = _peft_model(tiny_model_dir)
    setattr(model.get_base_model().config, attr, value)
    assert reason in label_only_unsupported(model.get_base_model())
    assert enable_label_only_loss(model) is False
    batch = DataCollator(0)(_features())
    assert model(**batch, use_cache=False, **{FLAG: True}).logits is not None  # untouched forward


# ----------------------------------------------------------------------------------------- end to end
def _rows(n: int, start: int = 0) -> list[dict]:
    names = ["Ann Lee", "Bob Ray", "Zoé Kim", "Omar Haddad"]
    return [{"messages": [{"role": "user", "content": f"Hi, I am {names[i % 4]}, ticket {i}" + " ok" * (i % 5)},
                          {"role": "assistant", "content": json.dumps({"name": names[i % 4]})}]}
            for i in range(start, start + n)]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Adapters trained with each combination of the switches (same data, seed and batches).

    In fp32 (``bf16: false``): the switches are compared to 1e-4, which bf16 autocast (the default on a
    CPU with AMX) does not hold between two different but equivalent computations.
    """
    from lorapipe.config import PipelineConfig
    from lorapipe.train import trainer

    root = tmp_path_factory.mktemp("speed")
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(12)))
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(4, 50)))
    out = {}
    for name, switches in {"plain": {"packing": False, "loss_only_on_labels": False},
                           "label_only": {"packing": False, "loss_only_on_labels": True},
                           "packed": {"packing": True, "loss_only_on_labels": True}}.items():
        cfg = PipelineConfig(
            task={"name": "speed", "description": "names", "system_prompt": "Extract the name as JSON."},
            base_model=str(tiny_model_dir), data={"train_file": str(root / "train.jsonl")},
            lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
            train={"max_steps": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                   "learning_rate": 0.02, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
                   "group_by_length": False, "load_best_model_at_end": False, "logging_steps": 1,
                   "seed": 5, "bf16": False, **switches})
        m = trainer.run(cfg, root / "train.jsonl", root / "eval.jsonl", root / name, resume=False)
        out[name] = (root / name / "adapter", m)
    return out


def test_every_switch_trains_the_same_adapter(trained):
    from safetensors.torch import load_file

    want = load_file(trained["plain"][0] / "adapter_model.safetensors")
    moved = max(float(v.abs().max()) for k, v in want.items() if "lora_B" in k)
    assert moved > 1e-3  # B starts at zero: training moved it
    for name in ("label_only", "packed"):
        got = load_file(trained[name][0] / "adapter_model.safetensors")
        assert sorted(got) == sorted(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
        assert trained[name][1].metrics["eval_loss"] == pytest.approx(trained["plain"][1].metrics["eval_loss"],
                                                                      rel=1e-5)


@pytest.mark.parametrize("name", ["label_only", "packed"])
def test_adapter_loads_in_plain_peft_and_changes_the_logits(trained, tiny_model_dir, name):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, manifest = trained[name]
    assert manifest.extra["speed"]["label_only_loss"] is True
    assert manifest.extra["speed"]["packing"] is (name == "packed")
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter).eval()
        after = tuned(ids).logits
    assert (after - before).abs().max().item() > 1e-3


# ----------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("sliding_window,packed", [(None, True), (16, False)])
def test_apply_packs_only_models_that_keep_rows_apart(tiny_model_dir, caplog, sliding_window, packed):
    from types import SimpleNamespace

    from lorapipe.config import TrainConfig
    from lorapipe.train import speed

    model = _peft_model(tiny_model_dir)
    model.get_base_model().config.sliding_window = sliding_window
    trainer = SimpleNamespace(model=model)
    plan = speed.apply(TrainConfig(packing=True), trainer, pad_token_id=0)
    assert trainer.speed_plan is plan and plan.label_only is True and plan.packing is packed
    assert isinstance(trainer.data_collator, PackingCollator if packed else DataCollator)
    if not packed:
        assert "train.packing: training on padded batches, because it uses sliding-window attention" in caplog.text
    speed.undo(model, plan)
    assert model.get_base_model().config._attn_implementation == "sdpa"
    assert model(**DataCollator(0)(_features()), use_cache=False, **{FLAG: True}).logits is not None


def test_bf16_on_cpu_holds_frozen_linears_in_bf16_and_gives_them_back(tiny_model_dir, tmp_path, monkeypatch):
    """CPU bf16 autocast: frozen linears are bf16 during training, fp32 again afterwards; LoRA stays fp32."""
    from types import SimpleNamespace

    from lorapipe.config import TrainConfig
    from lorapipe.train import speed

    model = _peft_model(tiny_model_dir)
    frozen = [m for n, m in model.named_modules() if n.endswith("q_proj.base_layer")]
    before = frozen[0].weight.detach().clone()
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(bf16=True, use_cpu=True), data_collator=None)
    plan = speed.apply(TrainConfig(packing=False), trainer, pad_token_id=0)
    assert plan.describe()["bf16_frozen_weights"] is True
    assert all(m.weight.dtype == torch.bfloat16 for m in frozen)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    assert model.get_output_embeddings().weight.dtype == torch.float32  # the head may be the tied embedding
    speed.undo(model, plan)
    assert frozen[0].weight.dtype == torch.float32 and torch.equal(frozen[0].weight, before)


def test_token_accuracy_survives_outputs_rebuilt_by_mixed_precision(tiny_model_dir):
    """accelerate's bf16 autocast returns a new output object; the label-only head's counts still count."""
    from types import SimpleNamespace

    from lorapipe.train import speed

    model = _peft_model(tiny_model_dir)
    trainer = speed.trainer_class().__new__(speed.trainer_class())
    model.get_base_model()._lorapipe_token_accuracy = (torch.tensor(3), torch.tensor(4))
    trainer._count_accuracy(model, {}, SimpleNamespace(logits=None))  # no attribute, no logits
    assert [int(x) for x in trainer._accuracy["train" if model.training else "eval"]] == [3, 4]
    assert "_lorapipe_token_accuracy" not in model.get_base_model().__dict__
