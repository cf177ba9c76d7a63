"""The pipeline configuration: one pydantic model per stage, loaded from ``pipeline.yaml``.

Every section forbids unknown keys, so a typo is an error rather than a silent default. A bad file
reports *all* of its problems at once, each with its line, field path and a hint::

    pipeline.yaml:14: lora.lora_alhpa: unknown field; did you mean `lora_alpha`?
    pipeline.yaml:21: train.learning_rate: Input should be greater than 0 (got -1)

Relative paths in the file are resolved against the directory that holds it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lorapipe.errors import ConfigError
from lorapipe.textfiles import DEFAULT_MAX_LINE_BYTES, read_text

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------------------- task
class TaskConfig(Section):
    name: str = Field(description="Short name of the task; names the run directory and the adapter.",
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = Field(description="What the model must do, in a sentence or two (goes to the teacher).")
    system_prompt: str = Field(description="The instruction the tuned model is trained and served with.")
    format_spec: str = Field("", description="The exact output format, as told to the teacher and judge.")
    quality_criteria: list[str] = Field(default_factory=list, description="What a good output does.")
    negative_criteria: list[str] = Field(default_factory=list, description="What a good output never does.")
    output_schema: dict[str, Any] | None = Field(
        None, description="Optional JSON Schema the output must satisfy (the output is then JSON).")

    @field_validator("output_schema")
    @classmethod
    def _schema_is_valid(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(v).check_schema(v)
            except jsonschema.SchemaError as e:
                raise ValueError(f"not a valid JSON Schema: {e.message}") from None
        return v


# ----------------------------------------------------------------------------------------- data
class DataConfig(Section):
    inputs: Path | None = Field(None, description="Raw inputs for the teacher: .jsonl, .csv or .txt.")
    input_field: str = Field("text", description="Field (JSONL) or column (CSV) holding the input text.")
    train_file: Path | None = Field(
        None, description="Ready chat/alpaca/prompt-completion rows; skips generate, score and augment.")
    eval_file: Path | None = Field(None, description="Ready eval rows; without it the split makes one.")
    max_inputs: int | None = Field(None, gt=0, description="Use only the first N raw inputs.")
    max_line_bytes: int = Field(DEFAULT_MAX_LINE_BYTES, ge=1024, description="Longest line read from an "
                                "inputs or rows file, in bytes; a longer one is reported as a bad line "
                                "(it is not read into memory).")


# ----------------------------------------------------------------------------------------- llm
class FewShot(Section):
    input: str = Field(description="An example input.")
    output: str = Field(description="The output the teacher should give for it.")


class Prices(Section):
    input_per_1k: float = Field(0.0, ge=0, description="Price per 1,000 prompt tokens.")
    output_per_1k: float = Field(0.0, ge=0, description="Price per 1,000 completion tokens.")


class LLMConfig(Section):
    """A teacher or judge: an OpenAI-compatible endpoint, an in-process model or a Python function."""

    kind: Literal["openai", "local", "python"] = Field(description="Which client to use.")
    model: str | None = Field(None, description="Endpoint model name (openai) or model spec (local).")
    base_url: str | None = Field(None, description="Endpoint root, e.g. http://localhost:8000/v1 (openai).")
    api_key_env: str | None = Field("OPENAI_API_KEY",
                                    description="Environment variable holding the API key (never the key).")
    function: str | None = Field(None, description="`module:function` (python).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_tokens: int = Field(256, gt=0, description="Most tokens per answer.")
    concurrency: int = Field(8, ge=1, le=256, description="Most requests in flight at once (openai); halved "
                             "while the endpoint times out or answers 503/429, and regained as it copes.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds without a byte from the endpoint (before the "
                             "first one, or between two streamed chunks) after which a request is retried "
                             "(openai); a slow answer that keeps streaming never times out.")
    stream: bool = Field(True, description="Stream answers (openai), so `timeout_s` bounds silence, not the "
                         "whole answer; false for an endpoint that cannot (one refusing `stream` is detected).")
    max_retries: int = Field(5, ge=0, description="Retries on 429/5xx/timeouts, with backoff (openai).")
    requests_per_second: float | None = Field(None, gt=0, description="Upper bound on request rate (openai).")
    batch_size: int = Field(8, ge=1, description="Generation batch size (local).")
    few_shot: list[FewShot] = Field(default_factory=list, description="Worked examples put in the prompt.")
    prices: Prices | None = Field(None, description="Token prices, to report cost.")
    cache: bool = Field(True, description="Cache answers on disk so reruns never repeat a call.")
    seed: int = Field(0, description="Sampling seed (local) / base seed sent to the endpoint.")

    @model_validator(mode="after")
    def _kind_fields(self) -> LLMConfig:
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValueError("kind `openai` needs `base_url` and `model`")
        if self.kind == "python" and (not self.function or ":" not in self.function):
            raise ValueError("kind `python` needs `function: module:function`")
        return self

    def identity(self) -> dict[str, Any]:
        """What identifies this teacher in manifests and the registry (no secrets)."""
        return {"kind": self.kind, "model": self.model, "base_url": self.base_url, "function": self.function}


# ----------------------------------------------------------------------------------------- stages
class ProbeConfig(Section):
    enabled: bool = Field(True, description="Run the probe at the start of `lorapipe run`.")
    n_inputs: int = Field(16, ge=1, description="Sample inputs to try the base model on.")
    samples: int = Field(2, ge=1, description="Samples per input (to measure variance).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the probe.")
    max_new_tokens: int = Field(96, gt=0, description="Most tokens per probe answer.")
    min_compliance: float = Field(0.95, ge=0, le=1, description="Format compliance that makes prompting enough.")
    min_score: float = Field(4.0, ge=0, le=5, description="Mean score that makes prompting enough.")
    stop_if_prompting_enough: bool = Field(False, description="Stop `run` when the verdict is `prompt`.")


class GenerateConfig(Section):
    samples_per_input: int = Field(1, ge=1, description="Teacher answers per input.")
    template: Path | None = Field(None, description="Jinja template replacing the built-in teacher prompt.")
    n_inputs: int | None = Field(None, gt=0, description="Have the teacher write this many new inputs.")
    seed_inputs: list[str] = Field(default_factory=list, description="Examples the teacher writes inputs from.")


class RuleConfig(Section):
    json_schema: bool = Field(True, description="Check the output against task.output_schema.")
    regex: str | None = Field(None, description="The output must match this regular expression.")
    min_length: int | None = Field(None, ge=0, description="Fewest characters in the output.")
    max_length: int | None = Field(None, gt=0, description="Most characters in the output.")
    grounding: bool = Field(False, description="Every extracted string value must appear in the input.")
    custom: list[str] = Field(default_factory=list, description="`module:function` checks: (input, output) -> "
                              "bool | (score 0-5, reason).")


class ScoreConfig(Section):
    threshold: float = Field(4.0, ge=0, le=5, description="Keep rows scoring at least this.")
    rules: RuleConfig = Field(default_factory=RuleConfig, description="Deterministic checks.")
    judge_criteria: list[str] | None = Field(
        None, description="Criteria the judge scores 0-5; default: the task's quality criteria.")
    rule_weight: float = Field(0.5, ge=0, le=1, description="Weight of rule checks vs the judge in the score.")
    judge_retries: int = Field(2, ge=0, description="Re-asks on an unparseable judge answer.")


class AugmentConfig(Section):
    enabled: bool = Field(True, description="Run augmentation.")
    paraphrases: int = Field(1, ge=0, description="Paraphrases per kept row (1 doubles the data).")
    edge_cases: dict[Literal["short", "ambiguous", "adversarial"], int] = Field(
        default_factory=lambda: {"short": 0, "ambiguous": 0, "adversarial": 0},
        description="How many edge cases of each category the teacher writes.")


class SplitConfig(Section):
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Share of source groups held out for eval.")
    seed: int = Field(42, description="Seed of the grouped split.")
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1,
                                            description="Jaccard similarity over which rows are duplicates.")


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(ALL_PROJECTIONS), description="Module names to adapt, or `all-linear`.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    layers_to_transform: list[int] | None = Field(
        None, description="Adapt only these decoder layers (0 is the one nearest the embeddings); default: all. "
        "Backward stops at the lowest adapted layer, so adapting the upper layers trains faster.")
    quantization: Literal["4bit", "8bit"] | None = Field(None, description="QLoRA base quantization (CUDA).")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("list at least one module name, or use `all-linear`")
        return v

    @field_validator("layers_to_transform")
    @classmethod
    def _layers(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if not v or min(v) < 0:
            raise ValueError("list the layer indices to adapt (0, 1, ...), or leave it out to adapt every layer")
        return sorted(set(v))


class TrainConfig(Section):
    num_train_epochs: float = Field(3, gt=0, description="Passes over the training data.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Rows per device per step.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Rows per device per eval step.")
    gradient_accumulation_steps: int = Field(4, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up.")
    lr_scheduler_type: str = Field("cosine", description="HF scheduler name.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")
    eval_steps: int = Field(50, ge=1, description="Evaluate every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (the best is always kept).")
    load_best_model_at_end: bool = Field(True, description="Keep the checkpoint with the lowest eval loss.")
    bf16: bool | Literal["auto"] = Field("auto", description="bf16 mixed precision; `auto` = where supported.")
    max_seq_length: int = Field(512, ge=16, description="Longer rows are truncated (and reported).")
    seed: int = Field(42, description="Training seed.")
    report_to: list[str] = Field(default_factory=lambda: ["none"], description="tensorboard, mlflow or none.")
    group_by_length: bool = Field(True, description="Batch rows of similar length, so padded batches waste "
                                  "little compute (not used with `packing`, which has no padding).")
    packing: bool = Field(False, description="Padding-free micro-batches: a micro-batch's rows become one "
                          "sequence whose rows do not attend to each other (same rows, same loss).")
    loss_only_on_labels: bool = Field(True, description="Run the LM head and cross-entropy only on positions "
                                      "that carry a label: the same loss, far fewer FLOPs with a large vocabulary.")
    torch_compile: bool = Field(False, description="torch.compile the model (on CPU it compiles for minutes and "
                                "then ran slower; try it for long GPU runs).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                         "memory, about 30 % more compute; only when memory is short.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")


class ExtraSet(Section):
    name: str = Field(description="Short name of the check set; names its column in the report and registry.",
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    file: Path = Field(description="Labelled rows the pipeline never trains on: chat/alpaca/prompt-completion "
                       "rows, or (with task.output_schema) objects holding the input field (data.input_field) "
                       "and the schema's properties as the reference, e.g. {\"text\", \"name\", \"email\"}.")


class EvaluateConfig(Section):
    max_inputs: int | None = Field(None, gt=0, description="Evaluate at most N eval rows.")
    extra_sets: list[ExtraSet] = Field(
        default_factory=list, description="Check sets scored like the eval split by every arm, with the same "
        "rubric, and reported as their own columns (report, `lorapipe registry show`); `registry diff` flags "
        "a version whose check-set score dropped.")
    max_new_tokens: int = Field(96, gt=0, description="Most tokens per answer.")
    temperature: float = Field(0.0, ge=0, le=2, description="Decoding temperature for both arms.")
    batch_size: int = Field(16, ge=1, description="Answers decoding together; every arm's rows share the batch "
                            "(one generate call for the eval rows and the check sets).")
    few_shot_arm: bool = Field(False, description="Also evaluate the base model with the teacher's few-shot prompt.")
    pairwise_judge: bool = Field(False, description="Judge sees both answers (positions swapped).")
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples for the win-rate interval.")

    @field_validator("extra_sets")
    @classmethod
    def _unique_names(cls, v: list[ExtraSet]) -> list[ExtraSet]:
        names = [x.name for x in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"check-set names must be unique; repeated: {', '.join(dupes)}")
        return v


class InferenceConfig(Section):
    fast: bool = Field(True, description="Decode Llama-family models on CPU with lorapipe's lean path (fused "
                       "matmuls, a KV cache written in place, continuous batching, LoRA exact on the side): "
                       "probe, A/B, predict, the local teacher and serve. false: transformers' generate/forward. "
                       "Other architectures always use transformers'.")
    weights: Literal["auto", "bf16", "fp16", "fp32", "int8"] = Field(
        "auto", description="Frozen base weights of the fast path: bf16 (oneDNN's GEMM on the CPU's AMX tiles, "
        "prefill included: 3-4x faster than fp32 there) and fp16 (fbgemm; prefill runs the fp32 weights) halve "
        "the bytes read per token; activations, accumulation, attention and LoRA stay fp32. auto: bf16 on a CPU "
        "with AMX, else fp16 (bf16 without AMX is slower than fp32). fp32 matches transformers' numerics; int8 "
        "(weights per channel, activations quantized per step) is another ~1.7x at batch 1 but changed 13 of the "
        "demo's 108 eval answers (bf16 and fp16: 0), so it is opt-in. `bench/decode.py` prints the greedy "
        "agreement of each with fp32.")
    grounded: bool = Field(
        False, description="Grounded JSON decoding for extraction tasks (probe, A/B, predict): inside a JSON "
        "string value, only tokens that keep the value a verbatim piece of the input (the user message) are "
        "allowed; keys, null, numbers and non-JSON text are the model's. A top-level property whose schema "
        "(task.output_schema) has `format: email` or a `pattern` anchored ^...$ is copied only as a whole match of "
        "it (no match in the input: not a string). It stops retyped, reformatted, cut-short and made-up values, "
        "not values copied from the wrong place or left null. Both A/B arms decode alike.")


class DistributedConfig(Section):
    launcher: Literal["none", "accelerate"] = Field("none", description="How training processes start.")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field("ddp", description="Data-parallel strategy.")
    num_processes: int = Field(1, ge=1, description="Processes (GPUs) to train on.")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    keep_global_batch: bool = Field(True, description="Divide accumulation so the global batch stays the same.")
    config_file: Path | None = Field(None, description="Your own accelerate config; overrides the above.")


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    max_loaded_adapters: int = Field(8, ge=1, description="Adapters kept in memory (LRU).")
    batch_window_ms: float = Field(5.0, ge=0, description="How long the scheduler collects a batch.")
    max_batch_size: int = Field(16, ge=1, description="Most requests in one forward pass.")
    queue_timeout_s: float | None = Field(
        30.0, gt=0, description="A request that cannot start (the batch is full) within this many seconds "
        "gets a 503 with Retry-After instead of waiting on; null: wait as long as it takes.")
    max_request_bytes: int | None = Field(
        4 * 1024 * 1024, ge=1024, description="Larger request bodies get a 413 before they are read; "
        "null: no limit.")


# ----------------------------------------------------------------------------------------- top level
class PipelineConfig(Section):
    task: TaskConfig
    base_model: str = Field("smollm2-135m-instruct",
                            description="Embedded alias, local HF directory, .gguf file, or hub id.")
    output_dir: Path | None = Field(None, description="Where runs go; default runs/<task.name> next to the file.")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: LLMConfig | None = Field(None, description="Writes outputs (generate, augment).")
    judge: LLMConfig | None = Field(None, description="Scores outputs; default: rule checks only.")
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    _source: Path | None = PrivateAttr(None)
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)  # --set values, for child processes
    _as_written: dict[str, str] = PrivateAttr(default_factory=dict)  # model paths before resolving them

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        if self.data.inputs is None and self.data.train_file is None and self.generate.n_inputs is None:
            raise ValueError("set `data.inputs` (raw inputs for the teacher), `data.train_file` "
                             "(ready rows) or `generate.n_inputs` (the teacher writes inputs)")
        if self.data.train_file is None and self.teacher is None:
            raise ValueError("without `data.train_file` a `teacher` is needed to write the outputs")
        return self

    # -- paths -------------------------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self._overrides)

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source else Path.cwd()

    def resolve(self, p: Path | str | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def run_dir(self) -> Path:
        return self.resolve(self.output_dir) or (self.base_dir / "runs" / self.task.name)

    def section_hash(self, *names: str) -> str:
        """sha256 of the named sections, resolved. Only the config: what else a stage depends on (files,
        code, model weights) is hashed by the runner (lorapipe.pipeline.deps)."""
        sections = {n: _jsonable(getattr(self, n)) for n in names}
        for dotted, written in self._as_written.items():  # a moved project folder is the same config
            top, _, sub = dotted.partition(".")
            if top in sections:
                if sub:
                    sections[top] = {**sections[top], sub: written}
                else:
                    sections[top] = written
        return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()

    def resolved(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    return v


# ----------------------------------------------------------------------------------------- loading
def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each field path in a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (k.value,)
            lines[path] = k.start_mark.line + 1
            lines.update(_key_lines(v, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            path = prefix + (i,)
            lines[path] = v.start_mark.line + 1
            lines.update(_key_lines(v, path))
    return lines


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def format_validation_error(err: ValidationError, source: str, lines: dict[tuple, int]) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in ("function-after",)))
        # pydantic puts union member names (e.g. 'list[str]') in loc; drop them.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p == "literal['all-linear']")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        if e["type"] == "extra_forbidden":
            model = _model_at(loc)
            names = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else (
                f"; known fields: {', '.join(names)}" if names else "")
            problems.append(f"{where}: {path}: unknown field{hint}")
        elif e["type"] == "missing":
            problems.append(f"{where}: {path}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            problems.append(f"{where}: {path}: {msg}{shown}")
    return problems


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load and validate ``pipeline.yaml``; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path to a pipeline.yaml "
                          "(see examples/contact-extraction/pipeline.yaml)")
    text = read_text(path, error=ConfigError)
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text)) if data is not None else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (task, base_model, data, lora, train, ...)")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(parents[:i + 1])
                raise ConfigError(f"--set {dotted}=...: `{where}` is {type(node).__name__} {node!r}, not a section "
                                  f"with fields; set `{where}` itself, or a field of a section (e.g. "
                                  "--set train.num_train_epochs=1)")
        node[last] = value
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        problems = format_validation_error(e, str(path), lines)
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the config:", problems) from None
    cfg._source = path.resolve()
    cfg._overrides = dict(overrides or {})
    _resolve_model_paths(cfg)
    return cfg


def _resolve_model_paths(cfg: PipelineConfig) -> None:
    """Make ``base_model`` (and a local teacher's or judge's ``model``) absolute when it is a path relative
    to the config's folder, as every relative path in the file is; remember what was written for hashing.

    A spec is such a path when it exists next to the config, or is spelt as one (``./x``, ``../x``):
    then a typo is reported as a missing folder, never taken for a hub id.
    """
    fields: list[tuple[str, Any, str]] = [("base_model", cfg, "base_model")]
    fields += [(f"{role}.model", llm, "model") for role in ("teacher", "judge")
               if (llm := getattr(cfg, role)) is not None and llm.kind == "local" and llm.model]
    for dotted, owner, attr in fields:
        spec: str = getattr(owner, attr)
        p = Path(spec).expanduser()
        if p.is_absolute() or not ((cfg.base_dir / p).exists() or spec.startswith(("./", "../"))):
            continue
        cfg._as_written[dotted] = spec
        setattr(owner, attr, str((cfg.base_dir / p).resolve()))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> ``{dotted key: YAML value}``; a malformed one is a :class:`ConfigError`."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.num_train_epochs=1")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', None) or e}); "
                              "quote it, e.g. --set 'task.name=\"x\"' or "
                              "--set 'lora.target_modules=[q_proj]'") from None
    return parsed
