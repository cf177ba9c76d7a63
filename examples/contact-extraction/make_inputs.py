"""Write the contact-extraction demo's raw inputs: messages shaped like real traffic, deterministic for a seed.

    python examples/contact-extraction/make_inputs.py [--n 1200] [--seed 7]

Writes ``inputs.jsonl`` (``{"id", "text"}``: what the teacher sees) and ``references.jsonl``
(``{"id", "name", "email", "phone"}``: the true contact, which teacher.py answers with), and prints
the shape of what it wrote: the share of each kind of message, of 0/1/2/3 fields given, of each
language.

Each message is composed from parts, not filled into a fixed template: a kind (message_mail.py,
message_other.py, message_casual.py: e-mails, replies above quoted threads, Outlook headers, cc lines,
forwards, several people named, long e-mails, auto-replies, system notifications, live chats, call
notes, voicemail, web forms, tickets, short texts, social messages, cold inquiries, messenger texts,
formal letters with signature blocks, support threads quoting the agent), a language (ten, with
their own phone formats, greetings and sign-offs), people from large name pools (accents, hyphens,
apostrophes, particles, honorifics, CJK names signed with their own script) and numbers that are
not phones (dates, times, order, invoice, ticket and room numbers, prices, postcodes, tracking
numbers, IBANs, error codes). The builders write the label with the text, following the
conventions of unseen.jsonl (see message_mail.py); unseen.jsonl itself is never read here: it
stays a measure (``evaluate.extra_sets`` in pipeline.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import message_casual as casual
import message_mail as mail  # the part modules sit next to this script (its folder is on sys.path)
import message_other as other
import message_parts as mp
from message_parts import LANGS

KEYS = ("name", "email", "phone")
# kind -> (builder, weight, languages it is written in; other draws become English). At least a fifth
# of the messages must give no contact or one field only (notifications, auto-replies, short texts,
# forwards, quoted replies): with fewer, the adapter invented values for them (issue 17: a room number
# returned as the phone, a quoted sender taken for the writer).
ALL = LANGS
KINDS: dict[str, tuple[Callable[[random.Random, str], tuple[str, dict]], int, tuple[str, ...]]] = {
    "email": (mail.email, 11, ALL), "reply": (mail.reply, 9, ALL), "outlook": (mail.outlook, 5, ALL),
    "cc_lines": (mail.cc_lines, 4, ALL), "forward": (mail.forward, 6, ALL), "several_people": (mail.several, 9, ALL),
    "long_email": (mail.long_email, 5, ALL), "auto_reply": (other.auto_reply, 4, ALL),
    "notification": (other.notification, 6, ("en", "en", "en", *other.NOTIFY)),
    "chat": (other.chat, 6, ("en", "de", "fr", "es", "nl")), "call_note": (other.call_note, 6, ("en", "de", "fr")),
    "voicemail": (other.voicemail, 5, ("en", "de", "fr", "es", "it", "nl")), "web_form": (other.web_form, 6, ALL),
    "ticket": (other.ticket, 4, ALL), "short_text": (other.short_text, 8, ALL), "social": (other.social, 3, ("en",)),
    "inquiry": (other.inquiry, 4, ALL), "messenger": (casual.messenger, 16, ALL),
    "formal_letter": (casual.formal_letter, 5, ("en", "de", "de", "nl", "fr", "it", "es")),
    "ticket_thread": (casual.ticket_thread, 4, ALL),
}
LANG_WEIGHTS = {"en": 42, "de": 9, "fr": 8, "es": 8, "it": 6, "nl": 6, "pt": 6, "pl": 5, "sv": 5, "tr": 5}
# Longest message kept, in characters: ~280 SmolLM2 tokens (English ~0.32 tokens a character, the other
# languages up to ~0.55), so that prompt + message + answer fit train.max_seq_length (384); a longer row
# would be cut at the end, where the signature is.
MAX_CHARS = {"en": 850, "tr": 420, "pl": 450}
MAX_CHARS_OTHER = 500
FIRST = 600  # data.max_inputs of the demo runs that train on a prefix: its shape is printed too


@dataclass
class Message:
    id: str
    text: str
    label: dict
    kind: str
    lang: str

    @property
    def fields(self) -> int:
        return sum(self.label[k] is not None for k in KEYS)


def check_label(text: str, lab: dict) -> None:
    """Every value is copied from the text (an internal invariant of the builders)."""
    assert set(lab) == set(KEYS), lab
    for k in KEYS:
        assert lab[k] is None or (isinstance(lab[k], str) and lab[k] and lab[k] in text), (k, lab[k], text)


def generate(n: int, seed: int) -> list[Message]:
    """``n`` distinct messages; message i is a function of (seed, i) alone, so editing one builder
    does not reshuffle the rest."""
    kinds, kw = list(KINDS), [w for _, w, _ in KINDS.values()]
    langs, lw = list(LANG_WEIGHTS), list(LANG_WEIGHTS.values())
    assert set(langs) == set(LANGS)
    out: list[Message] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        r = random.Random(f"contact-demo:{seed}:{i}")
        i += 1
        kind, lang = r.choices(kinds, kw)[0], r.choices(langs, lw)[0]
        build, _, written_in = KINDS[kind]
        lang = lang if lang in written_in else "en"
        text, lab = build(r, lang)
        text = re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip()
        if text in seen or len(text) > MAX_CHARS.get(lang, MAX_CHARS_OTHER):
            continue
        check_label(text, lab)
        seen.add(text)
        out.append(Message(hashlib.sha256(text.encode()).hexdigest()[:12], text, lab, kind, lang))
    return out


def make(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(inputs rows, reference rows) as the two files hold them."""
    msgs = generate(n, seed)
    return ([{"id": m.id, "text": m.text} for m in msgs],
            [{"id": m.id, **{k: m.label[k] for k in KEYS}} for m in msgs])


EMAIL_RE = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")


def national(phone: str) -> bool:
    """A phone written without its country code (``0176 ...``, ``(11) 9...``, ``503-555-...``)."""
    return not phone.lstrip("( ").startswith(("+", "00"))


def phone_place(text: str, phone: str) -> str:
    """Where the writer's phone sits: alone on a line, after a short label, or inside a sentence."""
    line = next(ln for ln in text.splitlines() if phone in ln).strip()
    before = line[:line.index(phone)]
    if not before.strip() and len(line) <= len(phone) + 2:
        return "bare"
    return "labelled" if len(before) <= 14 and not re.search(r"[a-z]{3,} [a-z]{2,}", before) else "sentence"


def distractor(m: Message) -> bool:
    """A number of 3 digits or more besides the writer's phone and any address: a date, a time (``0:38``), an
    order, invoice or room number, a price, a postcode, someone else's phone."""
    rest = EMAIL_RE.sub(" ", m.text.replace(m.label["phone"] or "\0", " "))
    return any(sum(c.isdigit() for c in g) >= 3 for g in re.findall(r"\d[\d .:/()-]*\d", rest))


def local_differs(m: Message) -> bool:
    """The address's local part is not a plain join of the name's words (nickname, initials, digits, another
    spelling): the model must copy it, not rebuild it from the name."""
    email, name = m.label["email"], m.label["name"]
    assert email
    words = [mp.ascii_fold(w) for w in re.split(r"[\s'-]+", name or "") if mp.ascii_fold(w)]
    local = re.sub(r"[._-]", "", email.split("@")[0])
    joins = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    joins |= {a + b for a in joins for b in joins}
    return local not in joins


def number_stats(msgs: list[Message]) -> str:
    n = len(msgs)
    phones = [m for m in msgs if m.label["phone"]]
    mails = [m for m in msgs if m.label["email"]]
    places = Counter(phone_place(m.text, m.label["phone"]) for m in phones)
    only = sum(not distractor(m) for m in phones)
    return "\n".join([
        f"phones: in {len(phones) / n:.0%} of messages, "
        f"{sum(national(m.label['phone']) for m in phones) / len(phones):.0%} national (no country code); "
        + ", ".join(f"{k} {v / len(phones):.0%}" for k, v in places.most_common())
        + f"; the only number in {only / n:.0%} of messages",
        f"numbers (3+ digits) that are not the writer's phone: in {sum(distractor(m) for m in msgs) / n:.0%} "
        "of messages",
        f"emails: local part not a join of the name in {sum(local_differs(m) for m in mails) / len(mails):.0%}, "
        f"not lower-case in {sum(m.label['email'] != m.label['email'].lower() for m in mails) / len(mails):.0%}"])


def shape(msgs: list[Message]) -> str:
    """The share of each kind, of 0-3 fields given, and of each language; where phones and addresses sit."""
    n = len(msgs)

    def pct(c: Counter) -> str:
        return ", ".join(f"{k} {v / n:.0%}" for k, v in c.most_common())

    fields = Counter(m.fields for m in msgs)
    low = sum(m.fields <= 1 for m in msgs)
    return "\n".join([f"{n} messages; {low / n:.0%} give no contact or one field only",
                      "fields given: " + ", ".join(f"{k}: {fields[k] / n:.0%}" for k in range(4)),
                      "per field: " + ", ".join(f"{k} {sum(m.label[k] is not None for m in msgs) / n:.0%}"
                                                for k in KEYS),
                      "kinds: " + pct(Counter(m.kind for m in msgs)),
                      "languages: " + pct(Counter(m.lang for m in msgs)), number_stats(msgs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    msgs = generate(a.n, a.seed)
    rows = {"inputs.jsonl": [{"id": m.id, "text": m.text} for m in msgs],
            "references.jsonl": [{"id": m.id, **{k: m.label[k] for k in KEYS}} for m in msgs]}
    for name, lines in rows.items():
        (a.out / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    print(f"wrote {len(msgs)} inputs to {a.out / 'inputs.jsonl'} and their labels to {a.out / 'references.jsonl'}")
    print(shape(msgs))
    print(f"-- the first {FIRST} (what the demo trains on) --")
    print(shape(msgs[:FIRST]))


if __name__ == "__main__":
    main()
