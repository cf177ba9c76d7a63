"""The rubric: rule checks plus a judge LLM on a 0–5 scale, shared by the score and augment stages,
the probe and the A/B evaluation. :func:`score_outputs` scores ``(input, output)`` pairs;
:func:`apply_score` puts a score on a row and says why it would be rejected.

How a score is made:

* **Format rules** (``compliant``): the output is non-empty; it parses as bare JSON and satisfies
  ``task.output_schema`` (when there is one and ``score.rules.json_schema``; a ```` ``` ```` fenced
  answer fails, because the tuned model must emit bare JSON); it matches ``score.rules.regex``
  (``re.search``; anchor with ``^...$`` to match the whole output); its length is within
  ``min_length``/``max_length`` characters. Any format failure makes the whole score 0.
* **Content rules**, each 0 or 5 (custom checks may return a 0–5 score): ``grounding`` (every
  non-empty string value of the JSON output appears in the input, compared case-insensitively with
  whitespace collapsed; non-JSON outputs have nothing to check) and ``custom`` ``module:function``
  checks ``(input, output) -> bool | (score, reason)``. The rule score is their mean (5 with none).
* **Judge**: one request per criterion (``score.judge_criteria``, default the task's quality
  criteria) asking for ``{"score": 0-5, "rationale": ...}``; surrounding text is tolerated, an
  unusable answer is asked again ``score.judge_retries`` times (with a new sample index, so a cache
  never returns the same garbage), then recorded as ``judge_error``.
* **Combined**: ``rule_weight * rules + (1 - rule_weight) * mean(judge)``; rules alone without a
  judge. A row with a judge error is computed from what is available but always rejected by
  :func:`decide`; callers of :func:`score_outputs` should treat it as unscored.

Every reason is ``"<kind>: <message>"`` (kinds: format, schema, regex, length, grounding, custom,
judge, threshold) so the data card can count rejections by kind.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorapipe.codehash import import_fresh
from lorapipe.data.journal import Tick, batched, normalize_text
from lorapipe.data.prompts import judge_messages
from lorapipe.errors import ConfigError
from lorapipe.llm.calls import batch_size_for, call, request

GENERIC_CRITERION = "The output does the task correctly and completely for this input."
ITEMS_PER_CHUNK = 64  # items per judge call in score_outputs (progress ticks between calls)


def rows_per_journal_write(cfg: Any, judge: Any) -> int:
    """Rows scored between journal writes in the stages: about one judge batch of requests."""
    return max(8, batch_size_for(cfg.judge) // max(1, len(judge_criteria(cfg, judge))))


@dataclass
class RubricScore:
    """The score of one output. ``score`` is 0–5; ``subscores`` holds ``rules`` and each judge
    criterion; ``reasons`` explain every lost point; ``compliant`` means the format rules pass."""

    score: float
    subscores: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    compliant: bool = True
    judge_error: str | None = None
    rationale: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RubricScore:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def reason_kind(reason: str) -> str:
    """The kind of a reason (``"grounding: ..."`` -> ``grounding``)."""
    return reason.split(":", 1)[0].strip() if ":" in reason else "other"


# ----------------------------------------------------------------------------------------- rules
def _string_leaves(obj: Any, path: str = "$") -> list[tuple[str, str]]:
    if isinstance(obj, str):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in _string_leaves(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [leaf for i, v in enumerate(obj) for leaf in _string_leaves(v, f"{path}[{i}]")]
    return []


def _load_custom(spec: str, index: int, base_dir: Path) -> Callable[[str, str], Any]:
    where = f"score.rules.custom[{index}]"
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise ConfigError(f"{where}: `{spec}` is not `module:function`")
    try:  # a check module may sit next to pipeline.yaml; an edited file is re-imported
        module = import_fresh(mod_name, base_dir)
    except ImportError as e:
        raise ConfigError(f"{where}: cannot import module `{mod_name}` ({e}); put it next to the config "
                          "file or on PYTHONPATH") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: module `{mod_name}` has no function `{fn_name}`")
    return fn


class RuleChecker:
    """The deterministic checks of ``score.rules``, compiled once."""

    def __init__(self, cfg: Any):
        self.rules = cfg.score.rules
        self.schema = cfg.task.output_schema if self.rules.json_schema else None
        self.validator = None
        if self.schema is not None:
            import jsonschema

            cls = jsonschema.validators.validator_for(self.schema)
            self.validator = cls(self.schema, format_checker=cls.FORMAT_CHECKER)  # `format: email` is checked too
        try:
            self.regex = re.compile(self.rules.regex) if self.rules.regex else None
        except re.error as e:
            raise ConfigError(f"score.rules.regex: not a valid regular expression: {e}") from None
        self.custom = [(spec, _load_custom(spec, i, cfg.base_dir)) for i, spec in enumerate(self.rules.custom)]

    def check(self, input_text: str, output: str) -> tuple[bool, float, list[str]]:
        """``(compliant, rule score 0-5, reasons)`` for one output."""
        reasons: list[str] = []
        compliant = True
        parsed, is_json = None, False
        if not output.strip():
            return False, 0.0, ["format: the output is empty"]
        if self.validator is not None:
            try:
                parsed, is_json = json.loads(output), True
            except json.JSONDecodeError as e:
                compliant = False
                reasons.append(_json_failure(output, e))
            if is_json:
                errors = sorted(self.validator.iter_errors(parsed), key=lambda err: list(err.absolute_path))
                for err in errors[:3]:
                    reasons.append(f"schema: output_schema violated at `{err.json_path}`: {err.message}")
                if len(errors) > 3:
                    reasons.append(f"schema: ... and {len(errors) - 3} more output_schema violations")
                compliant = compliant and not errors
        if self.regex is not None and not self.regex.search(output):
            compliant = False
            reasons.append(f"regex: the output does not match score.rules.regex `{self.regex.pattern}`")
        n = len(output)
        if self.rules.min_length is not None and n < self.rules.min_length:
            compliant = False
            reasons.append(f"length: the output has {n} characters, fewer than score.rules.min_length="
                           f"{self.rules.min_length}")
        if self.rules.max_length is not None and n > self.rules.max_length:
            compliant = False
            reasons.append(f"length: the output has {n} characters, more than score.rules.max_length="
                           f"{self.rules.max_length}")

        content: list[float] = []
        if self.rules.grounding:
            if not is_json:
                try:
                    parsed, is_json = json.loads(output), True
                except json.JSONDecodeError:
                    pass
            missing = []
            if is_json:
                haystack = normalize_text(input_text)
                missing = [(p, v) for p, v in _string_leaves(parsed)
                           if normalize_text(v) and normalize_text(v) not in haystack]
            for p, v in missing[:5]:
                reasons.append(f"grounding: `{p}` = {v!r} does not appear in the input")
            content.append(0.0 if missing else 5.0)
        for spec, fn in self.custom:
            s, why = _run_custom(spec, fn, input_text, output)
            content.append(s)
            if why:
                reasons.append(why)
        rule_score = sum(content) / len(content) if content else 5.0
        return compliant, (rule_score if compliant else 0.0), reasons


def _json_failure(output: str, e: json.JSONDecodeError) -> str:
    t = output.strip()
    if t.startswith("```"):
        inner = t.strip("`").partition("\n")[2] if "\n" in t else t.strip("`")
        try:
            json.loads(inner)
            return "format: the output is wrapped in a ``` code fence; it must be bare JSON"
        except json.JSONDecodeError:
            pass
    return f"format: the output is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})"


def _run_custom(spec: str, fn: Callable[[str, str], Any], input_text: str, output: str) -> tuple[float, str | None]:
    try:
        res = fn(input_text, output)
    except Exception as e:  # noqa: BLE001  (a crashing check fails the row, visibly, not the whole run)
        return 0.0, f"custom: `{spec}` raised {type(e).__name__}: {e}"
    if isinstance(res, bool):
        return (5.0, None) if res else (0.0, f"custom: `{spec}` failed")
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], (int, float)):
        s = max(0.0, min(5.0, float(res[0])))
        return s, (f"custom: `{spec}`: {res[1]}" if s < 5 else None)
    return 0.0, f"custom: `{spec}` returned {res!r}; return a bool or (score 0-5, reason)"


# ----------------------------------------------------------------------------------------- judge
def parse_judge(text: str) -> tuple[float, str] | str:
    """``(score, rationale)`` from a judge answer (JSON, possibly inside other text), or a problem."""
    dec = json.JSONDecoder()
    found: dict[str, Any] | None = None
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, _ = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            found = obj
            break
    excerpt = repr(" ".join(text.split())[:120])
    if found is None:
        return f"no JSON object with a `score` in the answer {excerpt}"
    raw = found["score"]
    try:
        s = float(raw) if not isinstance(raw, bool) else float("nan")  # true/false is not a score
    except (TypeError, ValueError):
        s = float("nan")
    if math.isnan(s):
        return f"`score` is not a number ({raw!r}) in the answer {excerpt}"
    if not 0 <= s <= 5:
        return f"`score` {s:g} is outside 0-5 in the answer {excerpt}"
    return s, str(found.get("rationale") or "").strip()


def judge_criteria(cfg: Any, judge: Any) -> list[str]:
    """The criteria the judge scores: ``score.judge_criteria``, else the task's quality criteria,
    else one generic criterion; none without a judge."""
    if judge is None:
        return []
    if cfg.score.judge_criteria is not None:
        return list(cfg.score.judge_criteria)
    return list(cfg.task.quality_criteria) or [GENERIC_CRITERION]


def _judge_all(cfg: Any, judge: Any, criteria: list[str], items: list[tuple[str, str]], idx: list[int]
               ) -> tuple[dict[tuple[int, int], tuple[float, str]], dict[tuple[int, int], str]]:
    """Judge each (item, criterion); retry unusable answers. Returns (results, problems)."""
    results: dict[tuple[int, int], tuple[float, str]] = {}
    problems: dict[tuple[int, int], str] = {}
    pending = [(i, c) for i in idx for c in range(len(criteria))]
    temperature = cfg.judge.temperature if cfg.judge is not None else 0.0
    for attempt in range(cfg.score.judge_retries + 1):
        if not pending:
            break
        reqs = [request(cfg.judge, judge_messages(cfg.task, criteria[c], *items[i]), sample_index=attempt,
                        temperature=temperature) for i, c in pending]
        retry = []
        for key, comp in zip(pending, call(judge, reqs)):
            parsed = f"request failed: {comp.error}" if comp.error else parse_judge(comp.text)
            if isinstance(parsed, str):
                problems[key] = parsed
                retry.append(key)
            else:
                results[key] = parsed
                problems.pop(key, None)
        pending = retry
    return results, problems


def score_outputs(cfg: Any, items: list[tuple[str, str]], judge: Any = None,
                  progress: Tick | None = None) -> list[RubricScore]:
    """Score ``(input_text, output_text)`` pairs on the task's rubric; one :class:`RubricScore` each.

    Pure: reads only ``cfg`` (task, score) and asks ``judge`` (an ``lorapipe.llm.base.LLM``, or None
    for rule checks only); never raises for a bad output or a bad judge answer. ``progress`` is
    called with the number of items just scored.
    """
    checker = RuleChecker(cfg)
    criteria = judge_criteria(cfg, judge)
    w = cfg.score.rule_weight
    out: list[RubricScore] = []
    for chunk in batched(list(items), ITEMS_PER_CHUNK):
        rules = [checker.check(inp, outp) for inp, outp in chunk]
        to_judge = [i for i, (ok, _, _) in enumerate(rules) if ok] if criteria else []
        results, problems = _judge_all(cfg, judge, criteria, chunk, to_judge) if to_judge else ({}, {})
        for i, (compliant, rule_score, reasons) in enumerate(rules):
            subs = {"rules": round(rule_score, 4)}
            rs = RubricScore(score=0.0, subscores=subs, reasons=list(reasons), compliant=compliant)
            if not compliant:
                rs.rationale = "; ".join(reasons)
                out.append(rs)
                continue
            got, notes, errs = [], [], []
            for c, crit in enumerate(criteria):
                if (i, c) in results:
                    s, why = results[(i, c)]
                    subs[crit] = s
                    got.append(s)
                    notes.append(f"{crit}: {why}" if why else crit + f": {s:g}/5")
                    if s < cfg.score.threshold:
                        rs.reasons.append(f"judge: `{crit}` scored {s:g}/5" + (f": {why}" if why else ""))
                else:
                    tries = cfg.score.judge_retries + 1
                    errs.append(f"`{crit}`: no usable answer after {tries} tr{'y' if tries == 1 else 'ies'} "
                                f"({problems.get((i, c), 'no answer')})")
            if errs:
                rs.judge_error = "; ".join(errs)
                rs.reasons.append(f"judge: error: {rs.judge_error}")
            rs.score = w * rule_score + (1 - w) * (sum(got) / len(got)) if got else rule_score
            rs.score = round(rs.score, 4)
            rs.rationale = "; ".join(notes) if notes else ("; ".join(reasons) or "all rule checks pass")
            out.append(rs)
        if progress:
            progress(len(chunk))
    return out


# ----------------------------------------------------------------------------------------- stage
def decide(rs: RubricScore, threshold: float) -> list[str]:
    """Why a scored row is rejected (empty: keep it)."""
    why = []
    if rs.judge_error:
        why.append(f"judge: error: {rs.judge_error}")
    if not rs.compliant:
        why += [r for r in rs.reasons if reason_kind(r) in ("format", "schema", "regex", "length")]
    if rs.compliant and not rs.judge_error and rs.score < threshold:
        why.append(f"threshold: score {rs.score:g} is below score.threshold {threshold:g}")
    if why:  # the other explanations too (e.g. grounding), each once
        why += [r for r in rs.reasons if r not in why]
    return why


def apply_score(row: dict[str, Any], rs: RubricScore, threshold: float) -> tuple[dict[str, Any], list[str]]:
    """The row with its score in ``meta``, and the rejection reasons (empty: keep)."""
    row = {"messages": row["messages"], "meta": dict(row["meta"])}
    row["meta"].update(score=rs.score, subscores=rs.subscores, rationale=rs.rationale)
    why = decide(rs, threshold)
    if why:
        row["meta"]["reasons"] = why
    return row, why
