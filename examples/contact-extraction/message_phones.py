"""Phone numbers as people of each language write them: per country, the national forms (no country
code: ``0176 2398 4410``, ``(11) 98765-4321``, ``503-555-0147``, ``06 12 48 77 09``) and the
international ones (``+49 176 ...``), mobile and landline, 9-12 digits, grouped by spaces, dashes,
dots, slashes or parentheses.

Most people write their own number the national way, and an adapter that has seen mostly ``+``
numbers misses ``98450 23117`` in a sentence; so :func:`phone` draws a national form
``NATIONAL`` of the time (3/4). Every generator takes a ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

NATIONAL = 0.75  # share of national forms (issue 17b: national numbers in running text were missed)


def digits(r: random.Random, n: int) -> str:
    return "".join(str(r.randint(0, 9)) for _ in range(n))


def lead_digits(r: random.Random, n: int, first: str = "123456789") -> str:
    return r.choice(first) + digits(r, n - 1)


D = digits
Forms = tuple[list[str], list[str]]  # (national, international)


def _us(r: random.Random) -> Forms:
    a, b, c = lead_digits(r, 3, "2345689"), lead_digits(r, 3, "2345679"), D(r, 4)
    return ([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"{a} {b} {c}", f"1-{a}-{b}-{c}", f"({a}){b}-{c}",
             f"{a}/{b}-{c}", f"{a}{b}{c}"],
            [f"+1 {a} {b} {c}", f"+1 ({a}) {b}-{c}", f"+1-{a}-{b}-{c}", f"+1 {a}-{b}-{c}"])


def _gb(r: random.Random) -> Forms:
    m, reg = "7" + lead_digits(r, 3), lead_digits(r, 3, "1235")
    ldn = f"{D(r, 4)} {D(r, 4)}"
    return ([f"0{m} {D(r, 6)}", f"0{m} {D(r, 3)} {D(r, 3)}", f"0{m}{D(r, 6)}", f"0{m}-{D(r, 6)}", f"020 {ldn}",
             f"01{reg} {D(r, 3)} {D(r, 3)}", f"(01{reg}) {D(r, 6)}", f"01{reg} {D(r, 6)}", f"(020) {ldn}",
             f"0{m[:2]} {m[2:]}{D(r, 2)} {D(r, 4)}"],
            [f"+44 {m} {D(r, 6)}", f"+44 (0){m} {D(r, 6)}", f"+44 20 {ldn}", f"+44 (0)20 {ldn}",
             f"+44 {m} {D(r, 3)} {D(r, 3)}"])


def _au(r: random.Random) -> Forms:
    a = r.choice("2378")
    return ([f"04{D(r, 2)} {D(r, 3)} {D(r, 3)}", f"04{D(r, 8)}", f"04{D(r, 2)}-{D(r, 3)}-{D(r, 3)}",
             f"(0{a}) {D(r, 4)} {D(r, 4)}", f"0{a} {D(r, 4)} {D(r, 4)}"],
            [f"+61 4{D(r, 2)} {D(r, 3)} {D(r, 3)}", f"+61 {a} {D(r, 4)} {D(r, 4)}"])


def _ie(r: random.Random) -> Forms:
    n = r.choice("35679")
    return ([f"08{n} {D(r, 3)} {D(r, 4)}", f"08{n}-{D(r, 3)}-{D(r, 4)}", f"08{n} {D(r, 7)}",
             f"(01) {D(r, 3)} {D(r, 4)}",
             f"01 {D(r, 3)} {D(r, 4)}"],
            [f"+353 8{n} {D(r, 3)} {D(r, 4)}", f"+353 (0)8{n} {D(r, 7)}"])


def _in(r: random.Random) -> Forms:
    m = r.choice("6789") + D(r, 4)
    city = r.choice(["22", "80", "44", "40", "20", "11"])
    return ([f"{m} {D(r, 5)}", f"{m}{D(r, 5)}", f"0{m} {D(r, 5)}", f"{m}-{D(r, 5)}", f"0{city}-{D(r, 4)} {D(r, 4)}",
             f"0{city} {D(r, 8)}"],
            [f"+91 {m} {D(r, 5)}", f"+91-{m}{D(r, 5)}", f"+91 {m}{D(r, 5)}"])


def _za(r: random.Random) -> Forms:
    m = r.choice("678") + D(r, 1)
    return ([f"0{m} {D(r, 3)} {D(r, 4)}", f"0{m}-{D(r, 3)}-{D(r, 4)}", f"(0{m}) {D(r, 3)} {D(r, 4)}",
             f"021 {D(r, 3)} {D(r, 4)}"],
            [f"+27 {m} {D(r, 3)} {D(r, 4)}", f"+27 (0){m} {D(r, 3)} {D(r, 4)}"])


def _ca(r: random.Random) -> Forms:
    a, b, c = r.choice(["514", "438", "418", "613", "819", "450"]), lead_digits(r, 3), D(r, 4)
    return ([f"{a}-{b}-{c}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"{a} {b} {c}", f"1-{a}-{b}-{c}"],
            [f"+1 {a} {b} {c}", f"+1 ({a}) {b}-{c}"])


def _de(r: random.Random) -> Forms:
    m, city = "1" + r.choice("567") + D(r, 1), r.choice(["30", "40", "89", "69", "221", "711", "341", "511", "421"])
    return ([f"0{m} {D(r, 4)} {D(r, 4)}", f"0{m}-{D(r, 8)}", f"0{m} {D(r, 8)}", f"0{m}/{D(r, 8)}",
             f"0{m} / {D(r, 4)} {D(r, 4)}", f"0{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"0{city} {D(r, 7)}",
             f"0{city}/{D(r, 4)}-{D(r, 2)}", f"0{city} / {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"(0{city}) {D(r, 3)} {D(r, 4)}",
             f"0{city}-{D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+49 {m} {D(r, 8)}", f"+49 (0){m} {D(r, 4)} {D(r, 4)}", f"+49 (0){city} {D(r, 4)} {D(r, 3)}",
             f"+49 {city} {D(r, 3)} {D(r, 4)}-{D(r, 2)}", f"0049 {m} {D(r, 8)}"])


def _at(r: random.Random) -> Forms:
    m = r.choice(["664", "650", "676", "699", "660"])
    return ([f"0{m} {D(r, 3)} {D(r, 4)}", f"0{m}/{D(r, 7)}", f"0{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"01/{D(r, 3)} {D(r, 2)} {D(r, 2)}", f"01 {D(r, 3)} {D(r, 4)}"],
            [f"+43 {m} {D(r, 7)}", f"+43 (0)1 {D(r, 3)} {D(r, 4)}"])


def _ch(r: random.Random) -> Forms:
    n, city = r.choice(["76", "78", "79", "77"]), r.choice(["44", "31", "61", "81", "22", "41"])
    return ([f"0{n} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"0{n}/{D(r, 3)} {D(r, 2)} {D(r, 2)}", f"0{n} {D(r, 7)}",
             f"0{city} {D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+41 {n} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"+41 (0){city} {D(r, 3)} {D(r, 2)} {D(r, 2)}"])


def _fr(r: random.Random) -> Forms:
    p = [D(r, 2) for _ in range(4)]
    a = r.choice("1234567")
    return ([f"0{a} {' '.join(p)}", f"0{a} {' '.join(p)}", f"0{a}.{'.'.join(p)}", f"0{a}-{'-'.join(p)}",
             f"0{a}{''.join(p)}", f"0{a} {p[0]}{p[1]} {p[2]}{p[3]}"],
            [f"+33 {a} {' '.join(p)}", f"+33 (0){a} {' '.join(p)}", f"+33 (0) {a} {' '.join(p)}",
             f"+33 {a}{''.join(p)}"])


def _be(r: random.Random) -> Forms:
    m = "4" + r.choice("789") + D(r, 1)
    return ([f"0{m}/{D(r, 2)}.{D(r, 2)}.{D(r, 2)}", f"0{m} {D(r, 2)} {D(r, 2)} {D(r, 2)}", f"0{m} {D(r, 6)}",
             f"02 {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"02/{D(r, 3)}.{D(r, 2)}.{D(r, 2)}"],
            [f"+32 {m} {D(r, 2)} {D(r, 2)} {D(r, 2)}", f"+32 (0){m} {D(r, 6)}"])


def _es(r: random.Random) -> Forms:
    m, fix = r.choice("67") + D(r, 2), "9" + r.choice("1356")
    return ([f"{m} {D(r, 3)} {D(r, 3)}", f"{m} {D(r, 2)} {D(r, 2)} {D(r, 2)}", f"{m}{D(r, 6)}",
             f"{m}-{D(r, 3)}-{D(r, 3)}",
             f"{m}.{D(r, 3)}.{D(r, 3)}", f"{fix} {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"{fix}{D(r, 1)} {D(r, 2)} {D(r, 2)} {D(r, 2)}"],
            [f"+34 {m} {D(r, 3)} {D(r, 3)}", f"+34 {m} {D(r, 2)} {D(r, 2)} {D(r, 2)}", f"(+34) {m}{D(r, 6)}"])


def _mx(r: random.Random) -> Forms:
    a = r.choice(["55", "33", "81", "222", "442"])
    rest = 10 - len(a)
    h = rest // 2
    return ([f"{a} {D(r, h)} {D(r, rest - h)}", f"({a}) {D(r, h)}-{D(r, rest - h)}", f"{a}-{D(r, h)}-{D(r, rest - h)}",
             f"{a}{D(r, rest)}", f"({a}) {D(r, h)} {D(r, rest - h)}"],
            [f"+52 {a} {D(r, h)} {D(r, rest - h)}", f"+52 1 {a} {D(r, h)} {D(r, rest - h)}"])


def _ar(r: random.Random) -> Forms:
    return ([f"11 {D(r, 4)}-{D(r, 4)}", f"11-{D(r, 4)}-{D(r, 4)}", f"15-{D(r, 4)}-{D(r, 4)}",
             f"(011) 15-{D(r, 4)}-{D(r, 4)}", f"(0351) {D(r, 3)}-{D(r, 4)}"],
            [f"+54 9 11 {D(r, 4)}-{D(r, 4)}", f"+54 11 {D(r, 4)}-{D(r, 4)}"])


def _it(r: random.Random) -> Forms:
    m, fix = "3" + r.choice("2345789") + D(r, 1), "0" + r.choice(["2", "6", "11", "51", "55", "81"])
    return ([f"{m} {D(r, 3)} {D(r, 4)}", f"{m}/{D(r, 7)}", f"{m} {D(r, 7)}", f"{m}-{D(r, 7)}",
             f"{m}.{D(r, 3)}.{D(r, 4)}",
             f"{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"{fix}-{D(r, 7)}", f"{fix} {D(r, 4)} {D(r, 4)}",
             f"{fix} {D(r, 8)}"],
            [f"+39 {m} {D(r, 3)} {D(r, 4)}", f"+39 0{r.choice('26')} {D(r, 4)} {D(r, 4)}", f"+39 {m}.{D(r, 7)}",
             f"0039 {m} {D(r, 7)}"])


def _nl(r: random.Random) -> Forms:
    a = r.choice(["20", "30", "10", "70", "40", "50", "71", "24"])
    return ([f"06-{D(r, 2)} {D(r, 2)} {D(r, 2)} {D(r, 2)}", f"06 {D(r, 8)}", f"06-{D(r, 8)}",
             f"06 {D(r, 2)} {D(r, 2)} {D(r, 2)} {D(r, 2)}",
             f"06-{D(r, 4)} {D(r, 4)}", f"0{a} {D(r, 3)} {D(r, 4)}", f"0{a}-{D(r, 7)}",
             f"0{a}-{D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+31 6 {D(r, 8)}", f"+31 (0)6 {D(r, 4)} {D(r, 4)}", f"+31 (0){a} {D(r, 3)} {D(r, 4)}",
             f"+31 6 {D(r, 2)} {D(r, 2)} {D(r, 2)} {D(r, 2)}"])


def _pt(r: random.Random) -> Forms:
    m = "9" + r.choice("1236") + D(r, 1)
    return ([f"{m} {D(r, 3)} {D(r, 3)}", f"{m}{D(r, 6)}", f"{m}-{D(r, 3)}-{D(r, 3)}", f"21 {D(r, 3)} {D(r, 4)}",
             f"22 {D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+351 {m} {D(r, 3)} {D(r, 3)}", f"(+351) {m}{D(r, 6)}"])


def _br(r: random.Random) -> Forms:
    a = r.choice(["11", "21", "31", "41", "51", "61", "71", "19", "48"])
    return ([f"({a}) 9{D(r, 4)}-{D(r, 4)}", f"({a}) 9 {D(r, 4)}-{D(r, 4)}", f"{a} 9{D(r, 4)}-{D(r, 4)}",
             f"{a} 9{D(r, 4)} {D(r, 4)}", f"({a}) {D(r, 4)}-{D(r, 4)}", f"{a}9{D(r, 8)}",
             f"(0{a}) 9{D(r, 4)}-{D(r, 4)}"],
            [f"+55 {a} 9{D(r, 4)}-{D(r, 4)}", f"+55 ({a}) 9{D(r, 4)}-{D(r, 4)}", f"+55 {a} 9{D(r, 8)}"])


def _pl(r: random.Random) -> Forms:
    m, a = r.choice("5678") + D(r, 2), r.choice(["22", "12", "61", "71", "58"])
    return ([f"{m} {D(r, 3)} {D(r, 3)}", f"{m}-{D(r, 3)}-{D(r, 3)}", f"{m}{D(r, 6)}",
             f"{m} {D(r, 2)} {D(r, 2)} {D(r, 2)}",
             f"({a}) {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"{a} {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"({a}) {D(r, 3)}-{D(r, 2)}-{D(r, 2)}"],
            [f"+48 {m} {D(r, 3)} {D(r, 3)}", f"+48 {a} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"+48 {m}{D(r, 6)}",
             f"0048 {m} {D(r, 3)} {D(r, 3)}"])


def _se(r: random.Random) -> Forms:
    m, a = "07" + r.choice("0236"), r.choice(["08", "031", "040", "018"])
    return ([f"{m}-{D(r, 3)} {D(r, 2)} {D(r, 2)}", f"{m} {D(r, 3)} {D(r, 4)}", f"{m}-{D(r, 7)}",
             f"{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"{m}{D(r, 7)}", f"{a}-{D(r, 3)} {D(r, 2)} {D(r, 2)}", f"{a} {D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+46 {m[1:]} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"+46 8 {D(r, 3)} {D(r, 3)} {D(r, 2)}",
             f"+46 (0){m[1:]}-{D(r, 7)}"])


def _tr(r: random.Random) -> Forms:
    m = "5" + r.choice("0345") + D(r, 1)
    return ([f"0{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"0{m}-{D(r, 3)}-{D(r, 4)}",
             f"0 ({m}) {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"{m} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"0{m}{D(r, 7)}", f"(0212) {D(r, 3)} {D(r, 2)} {D(r, 2)}",
             f"0312 {D(r, 3)} {D(r, 2)} {D(r, 2)}"],
            [f"+90 {m} {D(r, 3)} {D(r, 2)} {D(r, 2)}", f"+90 ({m}) {D(r, 3)} {D(r, 4)}", f"+90 {m}{D(r, 7)}"])


COUNTRIES: dict[str, list[Callable[[random.Random], Forms]]] = {
    "en": [_us, _us, _us, _gb, _gb, _au, _ie, _in, _za, _ca], "de": [_de, _de, _de, _at, _ch],
    "fr": [_fr, _fr, _fr, _be, _ca, _ch], "es": [_es, _es, _mx, _ar], "it": [_it, _it, _it, _ch],
    "nl": [_nl, _nl, _nl, _be], "pt": [_pt, _br, _br], "pl": [_pl], "sv": [_se], "tr": [_tr]}
EXTENSIONS = {"en": [" ext. {x}", " x{x}", " ext {x}"], "de": ["-{x}", " (Durchwahl {x})"], "fr": [" poste {x}"],
              "es": [" ext. {x}"], "it": [" int. {x}"], "nl": [" toestel {x}"], "pt": [" ramal {x}"],
              "pl": [" wew. {x}"], "sv": [" ankn. {x}"], "tr": [" dahili {x}"]}


def phone(r: random.Random, lang: str, ext: float = 0.05, national: float = NATIONAL) -> str:
    """A phone number as someone of ``lang`` writes it (national ``national`` of the time), now and then
    with an extension (kept in the value: it is part of the number as written)."""
    nat, intl = r.choice(COUNTRIES[lang])(r)
    p = r.choice(nat if r.random() < national else intl)
    if r.random() < ext:
        p += r.choice(EXTENSIONS[lang]).format(x=lead_digits(r, r.choice([2, 3, 4])))
    return p
