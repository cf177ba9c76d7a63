"""The decode loop's pieces: streaming text with stop strings and partial characters, and sampling."""

from __future__ import annotations

import pytest
import torch

from lorapipe.decoding.batch import Row, SamplingParams, TextStream, sample

PARTIAL, COMPLETES = 1000, 1001  # a two-token character: "é" split over two byte tokens


class CharTokenizer:
    """Token i is chr(i); PARTIAL alone decodes to U+FFFD, PARTIAL+COMPLETES to 'é'."""

    def decode(self, ids, skip_special_tokens=True):
        out = []
        for i, t in enumerate(ids):
            if t == PARTIAL:
                out.append("é" if i + 1 < len(ids) and ids[i + 1] == COMPLETES else "\ufffd")
            elif t != COMPLETES:
                out.append(chr(t))
        return "".join(out)


def run(tokens, stop=(), max_tokens=100):
    events = []
    row = Row([1], "__base__", SamplingParams(max_tokens=max_tokens, temperature=0, stop=tuple(stop)),
              sink=lambda d, f: events.append((d, f)))
    stream = TextStream(CharTokenizer(), eos_ids={0})
    for t in tokens:
        stream.push(row, t)
        if row.finish_reason:
            break
    return events


def ords(s):
    return [ord(c) for c in s]


@pytest.mark.parametrize("tokens, stop, max_tokens, events", [
    (ords("abc"), (), 3, [("a", None), ("b", None), ("c", "length")]),
    (ords("ab") + [0], (), 10, [("a", None), ("b", None), ("", "stop")]),
    (ords("abcd"), ("bc",), 10, [("a", None), ("", "stop")]),  # "b" held back, then the stop matched
    (ords("abcd"), ("bd",), 10, [("a", None), ("bc", None), ("d", None)]),  # held "b" released
    (ords("xy") + [0], ("yz",), 10, [("x", None), ("y", "stop")]),  # held text is flushed at the end
    (ords("hello world"), ("o w", "ll"), 20, [("h", None), ("e", None), ("", "stop")]),
    (ords("a") + [PARTIAL, COMPLETES] + ords("b"), (), 10, [("a", None), ("é", None), ("b", None)]),
    (ords("a") + [PARTIAL], (), 2, [("a", None), ("\ufffd", "length")]),
])
def test_text_stream(tokens, stop, max_tokens, events):
    assert run(tokens, stop, max_tokens) == events


def rows(*params):
    return [Row([1], "__base__", p, sink=lambda d, f: None) for p in params]


def test_greedy_rows_take_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    assert sample(logits, rows(SamplingParams(temperature=0), SamplingParams(temperature=0))) == [1, 0]


def test_tiny_top_p_keeps_only_the_top_token():
    logits = torch.tensor([[0.0, 2.0, 1.9, 1.8]])
    picks = {sample(logits, rows(SamplingParams(temperature=2.0, top_p=0.01)))[0] for _ in range(20)}
    assert picks == {1}


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    logits = torch.zeros((1, 50))

    def draws(seed):
        row = rows(SamplingParams(temperature=1.0, seed=seed))
        return [sample(logits, row)[0] for _ in range(8)]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
