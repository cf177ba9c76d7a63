"""Grounded JSON decoding (lorapipe.decoding.grounded): string values stay verbatim pieces of the input."""

from __future__ import annotations

import json

import pytest
import torch

from lorapipe.decoding.batch import Row, SamplingParams, TextStream, prefill
from lorapipe.decoding.grounded import GroundedLogits, JsonCopy, Source, field_shapes, vocabulary
from lorapipe.testing import build_tokenizer

SOURCE = "Thanks! Write to ann@x.io or call +1 555 0100. — Ann"
WANTS = '{"name": "Ann", "email": "ann@y.io", "phone": "+1 555 0199"}'  # the model's own favourite
RIGHT = '{"name": "Ann", "email": "ann@x.io", "phone": "+1 555 0100"}'  # its second choice, char by char


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _feed(state: JsonCopy, text: str) -> bool:
    return state.feed(text.encode("utf-8"))


@pytest.mark.parametrize("text,ok", [
    ('{"name": "Ann", "email": null}', True),
    ('{"made up key": "Ann"}', True),                       # keys are the model's
    ('{"name": "Bob"}', False),
    ('{"name": "ANN"}', False),                              # case is part of the copy
    ('{"tags": ["Ann", "x.io"], "n": 3}', True),
    ('{"tags": ["Ann", "y.io"]}', False),
    ('{"phone": "+1 555 0100", "note": {"who": "Ann"}}', True),
    ('Sure! "Bob" is not JSON, then {"name": "Ann"}', True),  # text outside {...} is not constrained
    ('{"name": "\\u0041nn"}', True),                         # escapes are compared decoded
    ('{"name": "A\\nn"}', False),
    ('{"email": "ann@x.io", "name": "— Ann"}', True),        # multi-byte characters
    ('{"name": "Ann" + "Lee"}', False),                      # after a value: `,` or the end only
    ('{"name": "Ann" "email": null}', False),
    ('{"tags": ["Ann" ], "name": "Ann"\n}', True),
])
def test_values_must_be_pieces_of_the_input(text, ok):
    assert _feed(JsonCopy(SOURCE), text) is ok


@pytest.mark.parametrize("source,text,ok", [
    ("Ann x", '{"name": "Ann\\u0077', False),      # a partial escape no next character spells: a way out
    ("Ann x", '{"name": "Ann\\u00', True),         # may still become \u0020, the space that follows
    ("Ann", '{"name": "Ann\\', False),              # nothing follows "Ann"
    ('Ann"x', '{"name": "Ann\\"x"}', True),
    ("Zo\u00eb", '{"name": "Zo\\u00EB"}', True),    # hex digits in either case
])
def test_an_escape_must_spell_a_character_the_input_has_next(source, text, ok):
    assert _feed(JsonCopy(source), text) is ok


def test_a_value_may_be_cut_in_the_middle_of_a_utf8_character():
    state = JsonCopy("Zoë")
    assert state.feed(b'{"name": "Zo\xc3') and state.feed(b'\xab"}')
    assert not JsonCopy("Zoe").feed(b'{"name": "Zo\xc3')


def test_vocabulary_is_each_tokens_bytes(tok):
    vocab = vocabulary(tok)
    ids = tok(RIGHT + " Zoë", add_special_tokens=False)["input_ids"]
    assert b"".join(vocab.table[i] for i in ids).decode("utf-8") == RIGHT + " Zoë"
    assert vocab.table[tok.eos_token_id] == b""
    assert {vocab.table[i] for i in vocab.closers} == {b'"', b",", b"}", b"]"}
    assert vocabulary(tok) is vocab  # built once per tokenizer


def _scripted_logits(tok, generated: str, vocab_size: int) -> torch.Tensor:
    """A model that wants to write WANTS; where it cannot, its next best is RIGHT's next character."""
    logits = torch.zeros(vocab_size)
    for target, score in ((WANTS, 10.0), (RIGHT, 5.0)):
        if target.startswith(generated) and len(generated) < len(target):
            logits[_char_id(tok, target[len(generated)])] += score
    if generated in (WANTS, RIGHT):
        logits[tok.eos_token_id] = 20.0
    return logits


def _char_id(tok, ch: str) -> int:
    ids = tok(ch, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, ch
    return ids[0]


@pytest.mark.parametrize("grounded", [False, True])
def test_the_decode_loop_writes_the_copy_the_input_allows(tok, grounded):
    """Through the fast path's own loop (prefill, steps, sampling): grounded rows end up with RIGHT."""
    vocab = vocabulary(tok)
    size = len(vocab.table)
    out: list[str] = []
    row = Row([1, 2, 3], "__base__", SamplingParams(max_tokens=80, temperature=0.0,
                                                    copy_from=SOURCE if grounded else None),
              lambda delta, finish: out.append(delta), vocab=vocab if grounded else None)
    stream = TextStream(tok, {tok.eos_token_id})

    class NoCache:  # the scripted model keeps no keys and values
        layers: list = []

        def batch_select_indices(self, idx):
            pass

    def forward(ids, mask, pos, cache, adapters):
        text = tok.decode(row.tokens, skip_special_tokens=True)
        return _scripted_logits(tok, text, size)[None].expand(ids.shape[0], size), cache or NoCache()

    batch = prefill(forward, [row], stream, tok.pad_token_id)
    while len(batch):
        batch.step(forward, stream)
    assert "".join(out) == (RIGHT if grounded else WANTS)
    assert json.loads("".join(out))


def test_transformers_path_processor_applies_the_same_rule(tok):
    vocab = vocabulary(tok)
    size = len(vocab.table)
    width = 3
    ids = torch.tensor([[1, 2, 3], [1, 2, 3]])
    proc = GroundedLogits([SOURCE, None], vocab, width)
    for _ in range(80):
        texts = [tok.decode(r[width:].tolist(), skip_special_tokens=True) for r in ids]
        if all(t in (WANTS, RIGHT) for t in texts):
            break
        scores = torch.stack([_scripted_logits(tok, t, size) for t in texts])
        nxt = proc(ids, scores).argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    assert [tok.decode(r[width:].tolist(), skip_special_tokens=True) for r in ids] == [RIGHT, WANTS]


def test_generate_passes_the_inputs_when_the_config_asks(tmp_path):
    from lorapipe.config import load_config
    from lorapipe.generation import copy_sources

    (tmp_path / "pipeline.yaml").write_text(
        "task: {name: t, description: d, system_prompt: s, output_schema: {type: object, properties: "
        "{email: {type: [string, 'null'], format: email}, name: {type: [string, 'null'], pattern: A}}}}\n"
        "data: {train_file: t.jsonl}\n")
    convs = [[{"role": "system", "content": "s"}, {"role": "user", "content": SOURCE}]]
    assert copy_sources(load_config(tmp_path / "pipeline.yaml"), convs) is None
    cfg = load_config(tmp_path / "pipeline.yaml", {"inference.grounded": True})
    (got,) = copy_sources(cfg, convs)
    assert got.text == SOURCE and list(got.shapes) == ["email"]  # `pattern: A` is not anchored: no shape


PHONE = r"^(?=(?:\D*\d){7})\+?\d[\d -]*\d$"  # 7 digits at least
SHAPED = Source("Hi Lena! j.weiss@wb.de, call 0176 2398 4410 oppure mail. Room 14. LG Moritz",
                field_shapes({"properties": {"email": {"format": "email"}, "phone": {"pattern": PHONE},
                                             "name": {"type": "string"}, "note": {"pattern": "^x"}}}))


def test_field_shapes_take_anchored_patterns_and_email():
    shapes = field_shapes({"properties": {"a": {"pattern": "^[0-9]+$"}, "b": {"pattern": "[0-9]+"},
                                          "c": {"format": "email"}, "d": {"pattern": "^x\\$"}, "e": True}})
    assert sorted(shapes) == ["a", "c"] and shapes["a"].pattern == "[0-9]+"
    assert field_shapes(None) == {}


@pytest.mark.parametrize("text,ok", [
    ('{"email": "j.weiss@wb.de", "phone": "0176 2398 4410", "name": "Moritz"}', True),
    ('{"email": "weiss@wb.de"}', False),             # begun mid-address: not where a match starts
    ('{"email": "j.weiss@wb"}', False),              # closed before the address is whole
    ('{"phone": "0176 2398 4410 oppure"}', False),   # ran on into the next word
    ('{"phone": "0176 2398"}', True),                # a prefix of a match that is itself whole
    ('{"phone": "14"}', False),                      # a number, but no match starts there
    ('{"name": "Lena", "note": "Room"}', True),      # unshaped properties are only copied
    ('{"email": "Lena"}', False),
    ('{"contact": {"email": "Lena"}}', True),        # nested objects keep the plain rule
])
def test_shaped_values_are_whole_matches_of_their_shape(text, ok):
    assert _feed(JsonCopy(SHAPED), text) is ok


def test_a_shape_with_no_match_in_the_input_cannot_be_a_string():
    state = JsonCopy(Source("see you at 10:30, room 4", SHAPED.shapes))
    assert not state.allows(b'{"phone": "')
    assert state.allows(b'{"phone": null, "name": "room 4"}')
