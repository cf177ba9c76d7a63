"""Grounded JSON decoding: every string value the model writes is copied from the input.

Extraction tasks promise values "copied exactly as written" (``score.rules.grounding`` checks it
afterwards). With ``inference.grounded: true`` the decoder keeps that promise while it writes: inside
a JSON string *value* (a string after ``:`` or in an array, not a key), a token may only extend the
value so that it is still a contiguous piece of the input's bytes; closing the string is always
allowed, and after it only ``,`` or the end of its object or array. Everything else (keys, ``null``,
numbers, layout, and text that is no JSON at all) is left to the model. The model's own choice
stands when it is allowed; otherwise the best allowed token of its top ``TOP_K`` is taken (for a
sampling row too), failing that the best token that closes the string, object or array, and inside
a shaped value that cannot close yet the best token of the whole vocabulary that goes on with it.

A top-level property whose schema gives the value's whole shape (``format: email``, or a ``pattern``
anchored with ``^`` and ``$``) is held to it as well: its value starts where a match of the shape
starts in the input (the input's leftmost-longest matches, :class:`Source`), stays a prefix of one
and closes only where it matches the shape whole; with no match in the input it cannot be a string
(the model writes ``null`` or another value). That stops an address begun mid-word
(``weissenboeck@…`` for ``j.weissenboeck@…``), a phone running on into the next word, and a time
or a name written as the phone or the email.

What it fixes: a value retyped from memory (``tomasz.w…`` for the ``tomek.w…`` the message shows),
a made-up address, a reformatted phone. What it cannot fix: a value copied from the wrong place in
the input, a name cut short, or ``null`` where the input has one.

Tokens are compared as bytes (byte-level BPE pieces can split a UTF-8 character); the table of each
token's bytes is built once per tokenizer (:func:`token_bytes`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

TOP_K = 64  # candidates tried, best first, before the best string-closing token

# ``format: email`` as grounded decoding copies it: no brackets, quotes or trailing dot around it
EMAIL = r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+"

_ESCAPES = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b", ord("f"): b"\f",
            ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character that stands for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def field_shapes(schema: Mapping[str, Any] | None) -> dict[str, re.Pattern[str]]:
    """The top-level properties of a JSON ``schema`` whose string values have a whole-value shape: a
    ``pattern`` anchored ``^...$`` (an unanchored one only says what a value contains), or ``format: email``."""
    out: dict[str, re.Pattern[str]] = {}
    for name, prop in ((schema or {}).get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        pattern = prop.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$") \
                and not pattern.endswith("\\$"):
            out[name] = re.compile(pattern[1:-1])
        elif prop.get("format") == "email":
            out[name] = re.compile(EMAIL)
    return out


@dataclass(frozen=True)
class Source:
    """What one answer's values are copied from: the input ``text``, and the ``shapes`` of some
    top-level properties (:func:`field_shapes`)."""

    text: str
    shapes: Mapping[str, re.Pattern[str]] = field(default_factory=dict)


class Vocabulary:
    """Each token id's bytes (special tokens: empty) and the ids of the one-character tokens that close a
    string, a value or a container (the last resort of :func:`choose`)."""

    def __init__(self, table: list[bytes]):
        self.table = table
        self.closers = [i for i, b in enumerate(table) if b in (b'"', b",", b"}", b"]")]
        self._by_first: dict[int, list[int]] | None = None

    def starting_with(self, byte: int) -> list[int]:
        """The ids of the tokens whose bytes start with ``byte``."""
        if self._by_first is None:
            self._by_first = {}
            for i, b in enumerate(self.table):
                if b:
                    self._by_first.setdefault(b[0], []).append(i)
        return self._by_first.get(byte, [])


def vocabulary(tokenizer: Any) -> Vocabulary:
    """The :class:`Vocabulary` of ``tokenizer``, built once and kept on it."""
    cached = getattr(tokenizer, "_lorapipe_vocabulary", None)
    if cached is not None:
        return cached
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    dec = _byte_decoder()
    byte_level = all(ch in dec for p in pieces[:2000] if p for ch in p)
    table: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            table.append(b"")
        elif byte_level and all(ch in dec for ch in piece):
            table.append(bytes(dec[ch] for ch in piece))
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # SentencePiece byte piece
            table.append(bytes([int(piece[3:5], 16)]))
        else:  # SentencePiece: '▁' is a space
            table.append(piece.replace("▁", " ").encode("utf-8"))
    vocab = Vocabulary(table)
    try:
        tokenizer._lorapipe_vocabulary = vocab
    except AttributeError:  # a tokenizer that takes no new attributes: rebuilt per call
        pass
    return vocab


class JsonCopy:
    """The decoding state of one answer: where in the JSON it is, and the string value being written.

    Text outside any ``{...}``/``[...]`` is not JSON and is never constrained; once a value has left
    the input (only possible through :func:`choose`'s last resort) the answer is no longer constrained.
    """

    __slots__ = ("source", "stack", "in_string", "is_value", "escape", "value", "last", "off", "closed_value",
                 "shapes", "key", "shape")

    def __init__(self, source: str | Source):
        src = source if isinstance(source, Source) else Source(source)
        self.source = src.text.encode("utf-8")
        # property -> (its shape, the input's matches of it as bytes)
        self.shapes = {k.encode("utf-8"): (p, [m.group().encode("utf-8") for m in p.finditer(src.text) if m.group()])
                       for k, p in src.shapes.items()}
        self.key = b""  # the last key of the top-level object
        self.shape: tuple[re.Pattern[str], list[bytes]] | None = None  # the shape of the value being written
        self.stack = ""  # open containers: "o" object, "a" array
        self.in_string = False
        self.is_value = False
        self.escape: bytes | None = None  # an escape sequence in progress (after the backslash)
        self.value = b""
        self.last = 0  # the last significant byte outside strings
        self.off = False
        self.closed_value = False  # a string value just closed: only `,` or the container's end may follow

    def _copy(self) -> JsonCopy:
        new = JsonCopy.__new__(JsonCopy)
        for k in self.__slots__:
            setattr(new, k, getattr(self, k))
        return new

    def feed(self, data: bytes) -> bool:
        """Advance over ``data``; False if a string value stopped being a piece of the input."""
        if self.off:
            return True
        for b in data:
            if not self.in_string:
                if self.closed_value and b not in b" \t\r\n":
                    if b not in b",}]":  # e.g. a value cut short by the last resort, then more text
                        return False
                    self.closed_value = False
                if b == 0x22:  # '"'
                    top = self.stack[-1:]
                    self.in_string, self.escape, self.value = True, None, b""
                    self.is_value = (top == "o" and self.last == 0x3A) or (top == "a" and self.last in (0x5B, 0x2C))
                    self.shape = self.shapes.get(self.key) if self.is_value and self.stack == "o" else None
                    if self.shape is not None and not self.shape[1]:  # nothing of that shape in the input
                        return False
                elif b in b"{[":
                    self.stack += "o" if b == 0x7B else "a"
                elif b in b"}]":
                    self.stack = self.stack[:-1]
                if b not in b" \t\r\n":
                    self.last = b
            elif self.escape is not None:
                if not self._escape(b):
                    return False
            elif b == 0x5C:  # backslash
                self.escape = b""
                if not self._may_escape():
                    return False
            elif b == 0x22:
                if self.shape is not None and not self._whole():
                    return False
                if not self.is_value and self.stack == "o":
                    self.key = self.value
                self.in_string, self.last, self.closed_value = False, b, self.is_value
            elif not self._extend(bytes([b])):
                return False
        return True

    def _escape(self, b: int) -> bool:
        assert self.escape is not None
        self.escape += bytes([b])
        if self.escape == b"u" or (self.escape[:1] == b"u" and len(self.escape) < 5):
            return self._may_escape()
        seq, self.escape = self.escape, None
        if seq[:1] == b"u":
            try:
                char = chr(int(seq[1:].decode("ascii"), 16)).encode("utf-8")
            except (ValueError, UnicodeEncodeError):
                return False
        else:
            char = _ESCAPES.get(seq[0], b"")
            if not char:
                return False
        return self._extend(char)

    def _extend(self, data: bytes) -> bool:
        self.value += data
        if not self.is_value:
            return True
        if self.shape is not None:
            return any(m.startswith(self.value) for m in self.shape[1])
        return self.value in self.source

    def _may_escape(self) -> bool:
        """Whether the escape begun so far (``\\``, ``\\u00``...) can still spell a character that may come
        next in the value: a partial escape is otherwise a way out of the input (``\\u0077\\u0077``...)."""
        if not self.is_value:
            return True
        partial = "\\" + self.escape.decode("ascii", "replace").lower()
        for char in self._next_chars():
            spellings = [f"\\u{ord(char):04x}"] if ord(char) < 0x10000 else []
            spellings += [f"\\{chr(k)}" for k, v in _ESCAPES.items() if v == char.encode("utf-8")]
            if any(sp.startswith(partial) for sp in spellings):
                return True
        return False

    def _next_chars(self) -> set[str]:
        """The characters that may follow the value: after it in its shape's matches, else in the input."""
        if self.shape is not None:
            tails = [m[len(self.value):] for m in self.shape[1] if m.startswith(self.value)]
        else:
            tails, at = [], self.source.find(self.value)
            while at >= 0:
                tails.append(self.source[at + len(self.value):at + len(self.value) + 4])
                at = self.source.find(self.value, at + 1)
        return {t[:n].decode("utf-8") for t in tails for n in range(1, min(4, len(t)) + 1)
                if _whole_char(t[:n])}

    def _whole(self) -> bool:
        assert self.shape is not None
        try:
            return self.shape[0].fullmatch(self.value.decode("utf-8")) is not None
        except UnicodeDecodeError:
            return False

    def next_bytes(self) -> set[int]:
        """The bytes that may come next inside a shaped value (empty elsewhere)."""
        if self.off or not self.in_string or self.shape is None or self.escape is not None:
            return set()
        n = len(self.value)
        return {m[n] for m in self.shape[1] if len(m) > n and m.startswith(self.value)}

    def allows(self, data: bytes) -> bool:
        return self.off or not data or self._copy().feed(data)

    def advance(self, data: bytes) -> None:
        """Take the chosen token; a token that broke the rule (last resort) ends the constraint."""
        if not self.feed(data):
            self.off = True


def _whole_char(data: bytes) -> bool:
    try:
        return len(data.decode("utf-8")) == 1
    except UnicodeDecodeError:
        return False


def choose(logits: torch.Tensor, state: JsonCopy, vocab: Vocabulary, first: int) -> int:
    """The model's choice ``first`` if it keeps ``state``'s values in the input, else the best of the top
    ``TOP_K`` tokens of ``logits`` (one row) that does, else the best allowed closing token."""
    table = vocab.table
    if first >= len(table) or state.allows(table[first]):
        return first
    for tok in torch.topk(logits, min(TOP_K, logits.shape[-1])).indices.tolist():
        if tok < len(table) and state.allows(table[tok]):
            return tok
    ok = [t for t in vocab.closers if state.allows(table[t])]
    if not ok:  # a shaped value that is not whole yet: the best token that goes on with one of its matches
        ok = [t for b in state.next_bytes() for t in vocab.starting_with(b) if state.allows(table[t])]
    return max(ok, key=lambda t: float(logits[t])) if ok else first


class GroundedLogits:
    """The same rule as a transformers ``LogitsProcessor`` (``model.generate``'s path), for one batch.

    ``sources[r]``: row ``r``'s input (None: unconstrained); ``width``: the padded prompt length.
    Where the model's best token would take a value out of the input, only :func:`choose`'s token is
    left (so on this path a sampled value is written greedily)."""

    def __init__(self, sources: list[str | Source | None], vocab: Vocabulary, width: int):
        self.states = [JsonCopy(s) if s is not None else None for s in sources]
        self.vocab, self.width = vocab, width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        table = self.vocab.table
        for r, state in enumerate(self.states):
            if state is None:
                continue
            if input_ids.shape[1] > self.width:  # the token picked at the previous step
                last = int(input_ids[r, -1])
                state.advance(table[last] if last < len(table) else b"")
            first = int(scores[r].argmax())
            tok = choose(scores[r], state, self.vocab, first)
            if tok != first:
                keep = scores[r, tok].clone()
                scores[r].fill_(-math.inf)
                scores[r, tok] = keep
        return scores
