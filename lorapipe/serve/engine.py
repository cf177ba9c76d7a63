"""One base model, many LoRA adapters, one scheduler thread.

The base model is loaded once and wrapped in a ``PeftModel`` when the first adapter arrives. Each
adapter version is added under its own *internal* PEFT name (``a1``, ``a2``, ...) and the public
name (``contact``) points at the current one. A request takes a :class:`Lease` on the version it
starts with; replacing an adapter loads the new version under a new internal name, moves the public
name, and deletes the old version only when its last lease is released, so an in-flight request
always finishes on the version it started with and the base is never reloaded.

All model mutations (adding or deleting adapters) and all forward passes happen on the scheduler
thread, between two decoding steps, so they never race. Verifying hashes and reading the weights
happen on the caller's thread. The scheduler collects requests for ``batch_window_ms`` and decodes
rows for *different* adapters in one forward pass; new requests join the running batch between steps.
Two LoRA kernels do the per-row adapters:

* ``stacked`` (default, :mod:`lorapipe.serve.lora_batch`): all adapters' weights stacked per layer,
  two gathered batched matmuls per layer; loading a new adapter is a copy (~50-80 ms). LoRA on
  linear layers only.
* ``peft``: PEFT's own mixed-batch inference (``adapter_names``, ``"__base__"`` for the bare base),
  for everything PEFT can serve (embedding LoRA, ``modules_to_save``...), ~2-3x slower per step.

With the stacked kernel, a Llama-family base on CPU decodes on lorapipe's lean path
(:mod:`lorapipe.decoding.llama`: base weights in bf16, fp16, fp32 or int8 per ``weights``, LoRA exact in fp32,
a KV cache written in place); other models, and ``fast=False``, use transformers' forward.

Loaded versions are kept in an LRU of ``max_loaded_adapters``; a version in use is never evicted.

Prompt prefixes that several requests share (a teacher's system prompt and worked examples) are
computed once per adapter version and their KV reused (:mod:`lorapipe.serve.prefix`, up to
``prefix_cache_tokens``). A request whose client goes away, or that waits in the queue longer than
``queue_timeout_s``, ends at once and releases everything it held (:mod:`lorapipe.serve.scheduler`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lorapipe.decoding.batch import Row, SamplingParams, TextStream
from lorapipe.errors import ServeError
from lorapipe.serve.adapters import (
    AdapterNotFound,
    AdapterRejected,
    AdapterSource,
    ResolvedAdapter,
    check_base_compatible,
    content_version,
    load_weights,
    stamp,
    validate_name,
    verify_adapter_dir,
)
from lorapipe.serve.jobs import Job, Lease, Result, Slot
from lorapipe.serve.lora_batch import StackedLoRA
from lorapipe.serve.metrics import ServeMetrics
from lorapipe.serve.prefix import PrefixCache
from lorapipe.serve.scheduler import EngineClosed, Scheduler

log = logging.getLogger(__name__)


class Engine:
    """Serve a base model and the adapters an :class:`AdapterSource` provides (see module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, base_name: str, base_identity: dict[str, Any] | None = None,
                 source: AdapterSource | None = None, max_loaded_adapters: int = 8, batch_window_ms: float = 5.0,
                 max_batch_size: int = 16, require_manifest: bool = True, allow_pickle: bool = False,
                 lora_kernel: str = "stacked", metrics: ServeMetrics | None = None,
                 queue_timeout_s: float | None = None, prefix_cache_tokens: int = 4096, fast: bool = True,
                 weights: str = "auto"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.base_name = base_name
        self.base_identity = base_identity or {}
        self.base_version = (self.base_identity.get("weights_sha256") or "unknown")[:12]
        self.source = source
        self.max_loaded_adapters = max_loaded_adapters
        self.require_manifest = require_manifest
        self.allow_pickle = allow_pickle
        self.metrics = metrics or ServeMetrics()
        self.device = next(model.parameters()).device
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        # no token spells more characters than this: a longer prompt is refused without tokenizing it
        self.max_prompt_chars = self.max_context * max((len(t) for t in tokenizer.get_vocab()), default=1)
        eos = model.generation_config.eos_token_id if model.generation_config else None
        eos_ids = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        stream = TextStream(tokenizer, {e for e in eos_ids if e is not None})
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._peft: Any = None
        if lora_kernel not in ("stacked", "peft"):
            raise ServeError(f"lora_kernel must be `stacked` or `peft`, got {lora_kernel!r}")
        self.lora_kernel = lora_kernel
        self._stacked = StackedLoRA() if lora_kernel == "stacked" else None
        self._fast = self._fast_path(model, weights) if fast and self._stacked is not None else None
        # transformers 5.2x renamed `past_key_values` to `cache`; older models still take the old name
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._lock = threading.RLock()
        self._slots: OrderedDict[str, Slot] = OrderedDict()  # public name -> current version, LRU order
        self._retired: dict[str, Slot] = {}  # internal name -> old version still leased
        self._overrides: dict[str, ResolvedAdapter] = {}  # loaded through the admin API
        self._failed: dict[str, tuple[str, AdapterRejected]] = {}  # name -> (token, error) until it changes
        self._name_locks: dict[str, threading.Lock] = {}
        self._counter = 0
        # a lambda, so that tests (and subclasses) can replace `_forward` on the instance
        self._scheduler = Scheduler(lambda *a: self._forward(*a), stream, pad_id,
                                    batch_window_s=batch_window_ms / 1000, max_batch_size=max_batch_size,
                                    queue_timeout_s=queue_timeout_s,
                                    prefixes=PrefixCache(prefix_cache_tokens) if prefix_cache_tokens else None)
        self._service_s = 0.0  # moving average of how long a started request takes (for Retry-After)

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, spec: str, *, source: AdapterSource | None = None, device: str | None = None,
                  **kwargs: Any) -> Engine:
        """Resolve and load the base model ``spec`` (see :func:`lorapipe.models.resolve`)."""
        from lorapipe.models import load

        model, tok, info = load(spec, device=device)
        return cls(model, tok, base_name=kwargs.pop("base_name", None) or spec, base_identity=info.identity(),
                   source=source, **kwargs)

    @staticmethod
    def _fast_path(model: Any, weights: str) -> Any:
        """lorapipe's lean decode path for this model (:mod:`lorapipe.decoding.llama`), or None: transformers'."""
        from lorapipe.decoding.llama import WEIGHTS, FastLlama, unsupported

        if weights not in WEIGHTS:
            raise ServeError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        reason = unsupported(model)
        if reason is not None:
            log.info("decoding with transformers' forward: %s", reason)
            return None
        return FastLlama(model, weights)

    def start(self) -> Engine:
        self._scheduler.start()
        return self

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Take no new requests, finish the queued and running ones, then stop the scheduler."""
        self._scheduler.shutdown(timeout)

    @property
    def fast_path(self) -> bool:
        """Whether passes take lorapipe's lean decode path (:mod:`lorapipe.decoding.llama`), not transformers'."""
        return self._fast is not None

    @property
    def running(self) -> bool:
        return self._scheduler.running

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self._scheduler.call(fn)

    def _enqueue(self, fn: Callable[[], Any]) -> None:
        self._scheduler.enqueue(fn)

    # ------------------------------------------------------------------------------ adapters
    def _resolve(self, name: str) -> ResolvedAdapter:
        if name in self._overrides:
            return self._overrides[name]
        if self.source is None:
            raise AdapterNotFound(f"model `{name}` not found: this server has no adapter directory; "
                                  f"the base model is `{self.base_name}`")
        return self.source.resolve(name)

    def acquire(self, name: str) -> Lease:
        """Hold ``name`` (an adapter, or the base model's name) for one request, loading it if needed."""
        if name == self.base_name:
            return Lease(name, None, self)
        validate_name(name)
        while True:
            with self._lock:
                slot = self._slots.get(name)
                if slot is not None:
                    slot.refs += 1
                    self._slots.move_to_end(name)
                    return Lease(name, slot, self)
                lock = self._name_locks.setdefault(name, threading.Lock())
            with lock:  # one loader per name; the others wait and then find the slot
                if name not in self._slots:
                    slot = self._load(self._resolve(name), take_ref=True)
                    return Lease(name, slot, self)

    def load(self, name: str, path: str | Path) -> Slot:
        """Load (or replace) ``name`` from the PEFT directory ``path``: the admin API's load."""
        validate_name(name)
        path = Path(path)
        resolved = ResolvedAdapter(name, path, content_version(path), token=stamp(path))
        with self._lock:
            lock = self._name_locks.setdefault(name, threading.Lock())
        with lock:
            slot = self._load(resolved, take_ref=False, force=True)
            self._overrides[name] = resolved
        return slot

    def reload(self, name: str) -> Slot | None:
        """Load the source's current content of ``name`` if it differs from what is loaded (the watch)."""
        with self._lock:
            lock = self._name_locks.setdefault(name, threading.Lock())
        with lock:
            if name in self._overrides:
                return None
            resolved = self._resolve(name)
            current = self._slots.get(name)
            if current is not None and current.token == resolved.token:
                return current
            return self._load(resolved, take_ref=False)

    def unload(self, name: str) -> None:
        """Forget ``name``; requests running on it finish first. Raise AdapterNotFound if not loaded."""
        with self._lock:
            slot = self._slots.pop(name, None)
            override = self._overrides.pop(name, None)
            if slot is None and override is None:
                raise AdapterNotFound(f"adapter `{name}` is not loaded")
            if slot is not None:
                self.metrics.adapter_swaps.labels("unload").inc()
                self._retire(slot)

    def _load(self, resolved: ResolvedAdapter, *, take_ref: bool, force: bool = False) -> Slot:
        """Verify, read and install one adapter version, then point its public name at it."""
        name, token = resolved.name, resolved.token or resolved.version
        failed = self._failed.get(name)
        if failed is not None and failed[0] == token and not force:
            raise failed[1]  # unchanged since it was refused: do not hash it again
        t0 = time.perf_counter()
        try:
            verified = verify_adapter_dir(resolved.path, allow_pickle=self.allow_pickle,
                                          require_manifest=self.require_manifest)
            check_base_compatible(verified, self.base_identity)
            if verified.config.get("use_dora"):
                raise AdapterRejected(f"{resolved.path}: DoRA adapters cannot share a batch with others; "
                                      "export it merged (`lorapipe export --merge`) and serve that as a base")
            from peft import LoraConfig

            config = LoraConfig.from_pretrained(str(resolved.path))
            config.inference_mode = True
            weights = load_weights(verified)
            with self._lock:
                self._counter += 1
                internal = f"a{self._counter}"
            self._call(lambda: self._install(internal, config, weights, resolved.path))
        except AdapterRejected as e:
            self._failed[name] = (token, e)
            self.metrics.adapter_load_failures.inc()
            log.error("adapter `%s` refused: %s", name, e)
            raise
        self._failed.pop(name, None)
        self.metrics.adapter_load_seconds.observe(time.perf_counter() - t0)
        slot = Slot(name, internal, resolved.version, token, refs=1 if take_ref else 0)
        with self._lock:
            old = self._slots.pop(name, None)
            self._slots[name] = slot
            self.metrics.adapter_swaps.labels("replace" if old else "load").inc()
            if old is not None:
                self._retire(old)
            self._evict()
        log.info("adapter `%s` version %s loaded as %s", name, slot.version, internal)
        return slot

    def _install(self, internal: str, config: Any, weights: dict[str, Any], path: Path) -> None:
        """Runs on the scheduler thread: make the adapter's weights available under ``internal``."""
        if self._stacked is None:
            self._peft_add(internal, config, weights, path)
            self._update_resident()
            return
        parts, needs_wrap = self._stacked.plan(self.model, config, weights, path)
        peft_scaling = None
        if needs_wrap:  # PEFT wraps the layers no adapter has used yet (and checks the state dict once)
            self._peft_add(internal, config, weights, path)
            peft_scaling = {p.path: self.model.get_submodule(p.path).scaling[internal] for p in parts}
            with warnings_silenced():
                self._peft.delete_adapter(internal)  # the wrappers stay; the weights live in the stacks
        self._stacked.add(self.model, internal, parts, peft_scaling)
        self._update_resident()

    def _peft_add(self, internal: str, config: Any, weights: dict[str, Any], path: Path) -> None:
        """Add the adapter to the PEFT model (creating it on first use) and load its weights."""
        from peft import PeftModel, set_peft_model_state_dict

        try:
            if self._peft is None:
                self._peft = PeftModel(self.model, config, adapter_name=internal, low_cpu_mem_usage=True)
            else:
                self._peft.add_adapter(internal, config, low_cpu_mem_usage=True)
        except (ValueError, KeyError, RuntimeError) as e:
            raise AdapterRejected(f"{path}: does not fit the base model `{self.base_name}`: {e}") from None
        try:
            result = set_peft_model_state_dict(self._peft, weights, adapter_name=internal, low_cpu_mem_usage=True)
            missing = [k for k in result.missing_keys if f".{internal}." in k or k.endswith(f".{internal}")]
            if missing:
                raise AdapterRejected(f"{path}: the weights lack {len(missing)} tensors the config needs "
                                      f"(e.g. {missing[0]}); re-export the adapter")
        except Exception as e:
            self._delete(internal)
            if isinstance(e, AdapterRejected):
                raise
            raise AdapterRejected(f"{path}: weights do not fit the base model `{self.base_name}`: {e}") from None
        self._peft.eval()

    def _delete(self, internal: str) -> None:
        """Runs on the scheduler thread: remove one adapter version's weights (and its kept prefixes)."""
        if self._scheduler.prefixes is not None:
            self._scheduler.prefixes.drop(internal)
        if self._stacked is not None:
            self._stacked.remove(internal)
        if self._peft is not None and internal in self._peft.peft_config:
            with warnings_silenced():  # "adapter was active" warnings: we never rely on the active adapter
                self._peft.delete_adapter(internal)
        self._update_resident()

    def _update_resident(self) -> None:
        if self._stacked is not None:
            n = len(self._stacked.slots)
        else:
            n = len(self._peft.peft_config) if self._peft is not None else 0
        self.metrics.adapters_resident.set(n)

    def _retire(self, slot: Slot) -> None:
        """Called under the lock: delete ``slot``'s weights once no request holds it."""
        slot.retired = True
        if slot.refs == 0:
            self._enqueue(lambda: self._delete(slot.internal))
        else:
            self._retired[slot.internal] = slot

    def _evict(self) -> None:
        """Called under the lock: drop least-recently-used idle versions beyond the LRU size."""
        for name in list(self._slots):
            if len(self._slots) <= self.max_loaded_adapters:
                return
            slot = self._slots[name]
            if slot.refs == 0:
                del self._slots[name]
                self.metrics.adapter_swaps.labels("evict").inc()
                self._retire(slot)

    def _release(self, lease: Lease) -> None:
        slot = lease.slot
        if slot is None:
            return
        with self._lock:
            slot.refs -= 1
            if slot.retired and slot.refs == 0:
                self._retired.pop(slot.internal, None)
                self._enqueue(lambda: self._delete(slot.internal))
            else:
                self._evict()

    def unload_from_source(self, name: str) -> None:
        """Unload ``name`` unless the admin API loaded it (the watch saw its folder disappear)."""
        if name not in self._overrides:
            with contextlib.suppress(AdapterNotFound):
                self.unload(name)

    def loaded_tokens(self) -> dict[str, str]:
        """Public name -> change token of every loaded adapter (see AdapterSource.snapshot)."""
        with self._lock:
            return {n: s.token for n, s in self._slots.items()}

    def loaded(self) -> dict[str, str]:
        """Public name -> version of every loaded adapter."""
        with self._lock:
            return {n: s.version for n, s in self._slots.items()}

    def available(self) -> list[str]:
        """Every adapter name a request may use now: the source's, the admin-loaded and the loaded ones."""
        names = set(self.loaded()) | set(self._overrides)
        if self.source is not None:
            names |= set(self.source.snapshot())
        return sorted(names)

    # ------------------------------------------------------------------------------ requests
    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def submit(self, lease: Lease, prompt: list[int], params: list[SamplingParams],
               sink: Callable[[int, str, str | None], None]) -> Job:
        """Queue one row per ``params``; ``sink(index, delta, finish_reason)`` runs on the scheduler thread
        (``sink(i, "", None)`` once when row ``i`` leaves the queue; see :mod:`lorapipe.serve.scheduler`).

        The lease is released when every row has finished (or failed, was cancelled or timed out
        in the queue)."""
        job = Job(lease)

        def row_sink(i: int, delta: str, finish: str | None) -> None:
            job.started = job.started or (time.monotonic() if finish is None and not delta else None)
            job.finished_rows += finish is not None
            last = finish is not None and job.finished_rows == len(job.rows)
            if last:  # release before the client hears back, so its next request sees it idle
                lease.release()
                self.metrics.in_flight.dec()
                if job.started and finish in ("stop", "length"):
                    self._service_s += 0.2 * (time.monotonic() - job.started - self._service_s)
            try:
                sink(i, delta, finish)
            finally:
                if last:
                    job.done.set()

        job.rows = [Row(prompt, lease.adapter, p, sink=lambda d, f, i=i: row_sink(i, d, f),
                        cancelled=lambda: job.cancelled) for i, p in enumerate(params)]
        try:
            self._scheduler.submit(job.rows)
        except EngineClosed:
            lease.release()
            raise
        self.metrics.in_flight.inc()
        return job

    def retry_after_s(self) -> int:
        """What a request refused for a full queue is told to wait: about one request's run time."""
        return max(1, min(60, round(self._service_s)))

    def generate(self, model: str, prompt: list[int], params: list[SamplingParams],
                 timeout: float | None = None) -> list[Result]:
        """Blocking convenience for scripts and benchmarks: one :class:`Result` per ``params``."""
        lease = self.acquire(model)
        texts: dict[int, list[str]] = {i: [] for i in range(len(params))}
        finish: dict[int, str] = {}

        def sink(i: int, delta: str, f: str | None) -> None:
            texts[i].append(delta)
            if f is not None:
                finish[i] = f

        version = lease.version
        job = self.submit(lease, prompt, params, sink)
        if not job.done.wait(timeout):
            job.cancel()
            raise ServeError(f"generation for `{model}` did not finish in {timeout} s")
        return [Result("".join(texts[i]), finish[i], len(prompt), len(job.rows[i].tokens), version)
                for i in range(len(params))]

    # ------------------------------------------------------------------------------ scheduler thread
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any,
                 adapters: list[str]) -> tuple[torch.Tensor, Any]:
        if self._fast is not None:
            self._stacked.set_rows(adapters)
            try:
                logits, cache = self._fast(ids, mask, pos, cache, self._stacked if self._stacked.segments else None)
            finally:
                self._stacked.segments = []
            self.metrics.batch_rows.observe(len(adapters))
            return logits, cache
        if self._stacked is not None:
            self._stacked.set_rows(adapters)
            hooks: Any = contextlib.nullcontext()
        elif self._peft is None:
            hooks = contextlib.nullcontext()
        else:  # PEFT's own mixed-batch inference
            hooks = self._peft.base_model._enable_peft_forward_hooks(adapter_names=adapters)
        try:
            with torch.inference_mode(), hooks:
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                 position_ids=pos.to(self.device), use_cache=True, logits_to_keep=1,
                                 **{self._cache_kwarg: cache})
        finally:
            if self._stacked is not None:
                self._stacked.segments = []
        self.metrics.batch_rows.observe(len(adapters))
        return out.logits[:, -1, :].float().cpu(), out[self._cache_kwarg]


@contextlib.contextmanager
def warnings_silenced():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
