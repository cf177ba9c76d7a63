"""The train stage's speed switches, applied to a PEFT model and a HF Trainer.

``train.loss_only_on_labels``  LM head and cross-entropy on labelled positions only (loss.py)
``train.packing``              padding-free micro-batches, row-separated attention (packing.py)
``train.group_by_length``      batches of similar length (the Trainer's length-grouped sampler);
                               nothing to group once packing removes padding
``train.gradient_checkpointing`` recompute activations in backward: less memory, ~30 % more compute
``train.torch_compile``        the Trainer's torch.compile of the model
``train.bf16`` (on a CPU)      the frozen linear weights are held in bf16 for the run, so autocast does not
                               cast 135M weights to bf16 again in every forward and backward (16 % of a
                               step on SmolLM2); the matmuls are the same ones, so the numbers are too

``bench/train_throughput.py`` measures them against plain TRL + PEFT; its docstring has the figures.
Every switch leaves the trained adapter an ordinary PEFT adapter and the loss the same number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lorapipe.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SpeedPlan:
    """What :func:`apply` switched on for one run, so :func:`undo` can put the model back."""

    label_only: bool = False
    packing: bool = False
    previous_attention: str | None = None
    fp32_weights: dict[Any, Any] | None = None  # frozen linear -> its fp32 weight, while held in bf16

    def describe(self) -> dict[str, Any]:
        return {"label_only_loss": self.label_only, "packing": self.packing,
                "packed_attention": self.previous_attention is not None,
                "bf16_frozen_weights": self.fp32_weights is not None}


def apply(t: TrainConfig, trainer, pad_token_id: int, *, sharded: bool = False) -> SpeedPlan:
    """Switch ``trainer``'s (PEFT) model and collator to the fast paths ``t`` asks for and the model supports.

    ``sharded``: the model's weights are partitioned across ranks outside of a module's forward
    (DeepSpeed ZeRO-3, FSDP), where reading the head's weight directly is not safe; the full head is
    kept there. Packing needs lorapipe's per-row attention; a model that cannot take it (sliding
    windows, attention outside transformers' AttentionInterface) trains on padded batches instead,
    since not every model would keep packed rows apart on its own.
    """
    from lorapipe.train.collate import DataCollator
    from lorapipe.train.loss import enable_label_only_loss
    from lorapipe.train.packing import PackingCollator, packed_attention_unsupported, use_packed_attention

    model = trainer.model
    plan = SpeedPlan()
    if t.loss_only_on_labels:
        if sharded:
            log.warning("train.loss_only_on_labels: keeping the full LM head with sharded weights (FSDP/ZeRO-3)")
        else:
            plan.label_only = enable_label_only_loss(model)
    if t.packing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        why = packed_attention_unsupported(base)
        if why:
            log.warning("train.packing: training on padded batches, because %s", why)
        else:
            plan.packing = True
            plan.previous_attention = use_packed_attention(model)
    trainer.data_collator = PackingCollator() if plan.packing else DataCollator(pad_token_id)
    args = getattr(trainer, "args", None)
    if args is not None and args.bf16 and args.use_cpu and not sharded:
        plan.fp32_weights = _hold_frozen_linears_in_bf16(model)
    trainer.speed_plan = plan
    return plan


def _hold_frozen_linears_in_bf16(model) -> dict[Any, Any]:
    """Cast every frozen ``nn.Linear`` weight (not the head, which may be tied to the embedding) to bf16.

    Under CPU bf16 autocast each of them is cast anyway at every use, and autocast caches no cast of a
    tensor that does not require grad. Returns the fp32 originals for :func:`undo`."""
    import torch

    head = model.get_output_embeddings()
    held = {}
    for module in model.modules():
        if (type(module) is torch.nn.Linear and module is not head and module.weight.dtype == torch.float32
                and not module.weight.requires_grad and module.bias is None):
            held[module] = module.weight.data
            module.weight.data = module.weight.data.to(torch.bfloat16)
    return held


def undo(model, plan: SpeedPlan) -> None:
    """Restore the model's own forward and attention (a caller's model is left as it came)."""
    from lorapipe.train.loss import disable_label_only_loss
    from lorapipe.train.packing import restore_attention

    if plan.label_only:
        disable_label_only_loss(model)
    restore_attention(model, plan.previous_attention)
    for module, weight in (plan.fp32_weights or {}).items():
        module.weight.data = weight
    plan.fp32_weights = None


def _epoch_seeded_length_sampler():
    """transformers' ``LengthGroupedSampler`` drawing each epoch's order from ``seed + epoch`` alone.

    The stock one draws from the global torch RNG when an epoch starts. A run resumed in the middle
    of epoch 2 or later starts that epoch with another RNG state than the uninterrupted run had
    there (dropout of the epochs before), so it skipped the trained batches of a *different* order
    and the weights drifted (max |dw| ~2e-3 on a tiny model). Seeded per epoch, resumption is exact.
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int):
            super().__init__(batch_size, lengths=lengths)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:  # accelerate's data loader calls it at every epoch
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return super().__iter__()

    return EpochSeededLengthGroupedSampler


def trainer_class():
    """``transformers.Trainer`` whose loss takes the label-only path when the plan allows it, and whose
    length-grouped order depends on the seed and epoch only (exact resumption)."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from lorapipe.train.loss import FLAG

    class LorapipeTrainer(Trainer):
        speed_plan: SpeedPlan = SpeedPlan()
        # argmax == label counts since the last log, per mode: logged as (eval_)mean_token_accuracy
        _accuracy: dict[str, list] | None = None

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return _epoch_seeded_length_sampler()(sampler.batch_size, sampler.lengths, seed)
            return sampler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # No KV cache in training: the model would otherwise build one every step, and a cache
            # also turns off transformers' detection of packed rows.
            inputs = {**inputs, "use_cache": False}
            # Eval asks for outputs too, but lorapipe evaluates the loss only (prediction_loss_only).
            if self.speed_plan.label_only and (not return_outputs or self.args.prediction_loss_only):
                inputs[FLAG] = True
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            self._count_accuracy(model, inputs, outputs)
            return (loss, outputs) if return_outputs else loss

        def _count_accuracy(self, model, inputs, outputs) -> None:
            import torch

            # the label-only head counted them; under bf16 autocast accelerate rebuilt the outputs without
            # the attribute, and the head's copy on the model is what is left (taken, so it is never stale)
            inner = getattr(model, "module", model)
            inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
            left = inner.__dict__.pop("_lorapipe_token_accuracy", None)
            counts = getattr(outputs, "token_accuracy", None) or left
            if counts is None:
                logits, labels = getattr(outputs, "logits", None), inputs.get("labels")
                if logits is None or labels is None:
                    return
                with torch.no_grad():
                    targets = labels[:, 1:].to(logits.device)
                    keep = targets != -100
                    counts = ((logits[:, :-1].argmax(-1) == targets) & keep).sum(), keep.sum()
            acc = self._accuracy = self._accuracy or {"train": [0, 0], "eval": [0, 0]}
            mode = acc["train" if model.training else "eval"]
            mode[0], mode[1] = mode[0] + counts[0].detach(), mode[1] + counts[1].detach()

        def log(self, logs, *args, **kwargs):
            # OpenAI's metric: the share of label tokens the model predicts exactly (this process's tokens)
            for mode, loss_key, key in (("train", "loss", "mean_token_accuracy"),
                                        ("eval", "eval_loss", "eval_mean_token_accuracy")):
                counts = (self._accuracy or {}).get(mode)
                if loss_key in logs and counts and int(counts[1]) > 0:
                    logs[key] = round(float(counts[0]) / float(counts[1]), 6)
                    counts[0] = counts[1] = 0
            return super().log(logs, *args, **kwargs)

    return LorapipeTrainer
