"""Logits only where there is loss: the LM head and cross-entropy run on labelled positions only.

With assistant-only labels most positions of a chat row (system prompt, user message, template
scaffolding, padding) carry no loss, yet a plain causal-LM forward projects *every* position onto the
vocabulary. With a 49k vocabulary that projection is a large share of the model's FLOPs (about 80 %
for a 4-layer, 256-wide model, about 20 % for SmolLM2-135M), and the ``(batch, length, vocab)``
logits are the largest activation of the step.

:func:`enable_label_only_loss` patches a causal LM's ``forward`` so that a call with
``label_only_loss=True`` and ``labels`` runs the backbone, keeps the hidden states whose *next*
token has a label, and computes the cross-entropy of those rows only, in chunks of the vocabulary
projection, without keeping any logits for the backward pass: the gradient with respect to the
hidden states is computed in the same pass (:class:`HeadCrossEntropy`). Without the flag the
forward is the original one, so generation, saving and plain evaluation are unchanged.

The patch is applied to the underlying ``PreTrainedModel`` before (or after) PEFT wraps it; the call
still goes through every wrapper (PEFT, DDP, accelerate), so LoRA layers inside the backbone and
gradient synchronisation work as usual. The loss is the sum of the per-token losses divided by
``num_items_in_batch`` when the Trainer passes it (the whole accumulated batch), else by the number
of labelled tokens: the same reduction as transformers' ``ForCausalLMLoss``.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch

log = logging.getLogger(__name__)

IGNORE = -100
# Rows of the [rows, vocab] fp32 logits tile held at once: ~128 MB whatever the vocabulary.
TILE_ELEMENTS = 1 << 25
FLAG = "label_only_loss"
# Config attributes that change the logits after the head's matmul; their models keep the full head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier",
                     "lm_head_multiplier")


class HeadCrossEntropy(torch.autograd.Function):
    """``sum(cross_entropy(hidden @ weight.T + bias, targets))`` without keeping the logits.

    The forward walks the rows in tiles of at most :data:`TILE_ELEMENTS` logits; for each tile it
    computes the loss and, when a gradient is needed, ``d loss / d logits = softmax - onehot``
    in place, and from it the gradient of the hidden states (and of the head's weight and bias when
    they are trainable). Backward only scales what forward stored. Head FLOPs: one matmul for the
    forward plus one per trainable input, the same as autograd, but no ``[rows, vocab]`` tensor
    lives from the forward to the backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, correct=None):
        vocab = weight.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        rows = max(1, TILE_ELEMENTS // vocab)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for s in range(0, hidden.shape[0], rows):
            h, t = hidden[s:s + rows], targets[s:s + rows]
            logits = h @ weight.t()
            if bias is not None:
                logits = logits + bias
            # One fused log-softmax pass: about twice as fast on CPU as logsumexp, subtract, exp.
            logp = torch.log_softmax(logits.float(), dim=-1)
            del logits
            total -= logp.gather(1, t[:, None]).sum()
            if correct is not None:  # token accuracy (what the Trainer logs as mean_token_accuracy)
                correct += (logp.argmax(-1) == t).sum()
            if need_h or need_w or need_b:
                probs = logp.exp_()  # the softmax, in place
                probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d loss / d logits
                if need_h:
                    grad_h[s:s + rows] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w += probs.t() @ h.float()
                if need_b:
                    grad_b += probs.sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.which = (need_h, need_w, need_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        grads = [(next(saved) * grad_out).to(dtype) if need else None
                 for need, dtype in zip(ctx.which, ctx.dtypes)]
        return (*grads, None, None)


def head_cross_entropy(hidden, weight, bias, targets, correct=None):
    """Sum of the token cross-entropies of ``hidden @ weight.T (+ bias)`` against ``targets``; the number
    of targets that are the argmax is added to ``correct`` (a scalar tensor) when given."""
    return HeadCrossEntropy.apply(hidden, weight, bias, targets, correct)


def label_only_unsupported(model) -> str | None:
    """Why ``model`` cannot use the label-only head (``None`` when it can)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for attr in _LOGIT_TRANSFORMS:
        if getattr(cfg, attr, None) not in (None, 1, 1.0):
            return f"its config sets `{attr}` (the logits are transformed after the head)"
    if getattr(cfg, "output_router_logits", False):
        return "its forward adds a router auxiliary loss (mixture of experts)"
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:  # a PEFT or quantised wrapper is not a plain matmul
        return f"its output head is a {type(head).__name__}, not a plain Linear layer"
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), torch.nn.Module):
        return "its backbone cannot be found through `base_model_prefix`"
    return None


def _label_only_forward(model, input_ids=None, attention_mask=None, position_ids=None, labels=None,
                        num_items_in_batch=None, **kwargs):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    # PEFT passes output_attentions=None, return_dict=None, ...; the backbone takes what is set.
    kwargs = {k: v for k, v in kwargs.items() if v is not None and k not in ("use_cache", "logits_to_keep")}
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False, **kwargs)
    hidden = out.last_hidden_state[:, :-1]
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE
    head = model.get_output_embeddings()
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    total = head_cross_entropy(hidden[keep], head.weight, head.bias, targets[keep], correct)
    if num_items_in_batch is None:
        denom = keep.sum().clamp(min=1)
    else:
        denom = torch.as_tensor(num_items_in_batch, device=total.device)
    out = CausalLMOutputWithPast(loss=total / denom, logits=None)
    out.token_accuracy = (correct, keep.sum())  # read by the trainer (lorapipe.train.speed), not a model field
    # accelerate's mixed precision rebuilds the output object (fp32 copies) and drops that attribute
    model._lorapipe_token_accuracy = out.token_accuracy
    return out


def enable_label_only_loss(model) -> bool:
    """Patch ``model`` (a transformers causal LM, not yet or already PEFT-wrapped) in place.

    Returns False, and leaves the model as it was, when the model's head cannot be computed this way
    (a logit soft-cap or scale, a wrapped head); the caller then keeps the full head.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    why = label_only_unsupported(base)
    if why:
        log.warning("train.loss_only_on_labels: keeping the full LM head for this model: %s", why)
        return False
    if getattr(base, "_lorapipe_original_forward", None) is not None:
        return True
    original = base.forward

    def forward(self, *args: Any, label_only_loss: bool = False, **kwargs: Any):
        if label_only_loss and kwargs.get("labels") is not None and not args:
            return _label_only_forward(self, **kwargs)
        return original(*args, **kwargs)

    base._lorapipe_original_forward = original
    base.forward = types.MethodType(forward, base)
    return True


def disable_label_only_loss(model) -> None:
    """Undo :func:`enable_label_only_loss` (the model's class ``forward`` is used again)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "_lorapipe_original_forward", None) is not None:
        del base.forward
        base._lorapipe_original_forward = None
