"""Numbers that are *not* phones, as each language writes them: dates, times, prices, postcodes, and
order, invoice, ticket, room, account, tracking, IBAN-like, error, code, flight and VAT numbers
(several look like a phone number on purpose). Every generator takes a ``random.Random``.
"""

from __future__ import annotations

import random

from message_parts import digits, lead_digits

MONTHS = {"en": "January February March April May June July August September October November December",
          "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
          "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
          "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
          "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
          "nl": "januari februari maart april mei juni juli augustus september oktober november december",
          "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
          "pl": "stycznia lutego marca kwietnia maja czerwca lipca sierpnia września października listopada grudnia",
          "sv": "januari februari mars april maj juni juli augusti september oktober november december",
          "tr": "Ocak Şubat Mart Nisan Mayıs Haziran Temmuz Ağustos Eylül Ekim Kasım Aralık"}
WEEKDAYS = {"en": "Mon Tue Wed Thu Fri Sat Sun", "de": "Mo. Di. Mi. Do. Fr. Sa. So.",
            "fr": "lun. mar. mer. jeu. ven. sam. dim.",
            "es": "lun mar mié jue vie sáb dom", "it": "lun mar mer gio ven sab dom", "nl": "ma di wo do vr za zo",
            "pt": "seg ter qua qui sex sáb dom", "pl": "pon. wt. śr. czw. pt. sob. niedz.",
            "sv": "mån tis ons tors fre lör sön", "tr": "Pzt Sal Çar Per Cum Cmt Paz"}


def _ordinal(d: int) -> str:
    return "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


def date(r: random.Random, lang: str) -> str:
    d, m, y = r.randint(1, 28), r.randint(1, 12), r.choice([2023, 2024, 2025, 2026])
    mon = MONTHS[lang].split()[m - 1]
    if lang == "en":
        return r.choice([f"{m}/{d}/{y}", f"{d}/{m:02d}/{y}", f"{mon} {d}, {y}", f"{d} {mon} {y}",
                         f"{y}-{m:02d}-{d:02d}",
                         f"{d} {mon[:3]}", f"{mon[:3]} {d}", f"{m}/{d}/{y % 100}", f"the {d}{_ordinal(d)}"])
    sep = {"de": ".", "pl": ".", "tr": ".", "nl": "-"}.get(lang, "/")
    iso = lang == "sv"
    return r.choice([f"{y}-{m:02d}-{d:02d}" if iso else f"{d:02d}{sep}{m:02d}{sep}{y}",
                     f"{d}. {mon}" if lang in ("de",) else f"{d} de {mon}" if lang in ("es", "pt") else f"{d} {mon}",
                     f"{d}{sep}{m}{sep}{y % 100}" if not iso else f"{d}/{m}",
                     f"{d}. {mon} {y}" if lang == "de" else f"{d} de {mon} de {y}" if lang in ("es", "pt")
                     else f"{d} {mon} {y}"])


def time_(r: random.Random, lang: str) -> str:
    h, mi = r.randint(7, 19), r.choice([0, 15, 30, 45, 10, 20])
    return r.choice({"en": [f"{h}:{mi:02d}", f"{h % 12 or 12}:{mi:02d}{r.choice(['am', 'pm', ' AM', ' PM'])}",
                            f"{h % 12 or 12}{r.choice(['am', 'pm'])}"],
                     "de": [f"{h}:{mi:02d} Uhr", f"{h}.{mi:02d} Uhr"], "fr": [f"{h}h{mi:02d}", f"{h}h"],
                     "nl": [f"{h}.{mi:02d} uur", f"{h}:{mi:02d}"], "sv": [f"kl. {h}.{mi:02d}", f"{h}:{mi:02d}"],
                     "tr": [f"saat {h}:{mi:02d}", f"{h}.{mi:02d}"]}.get(lang, [f"{h}:{mi:02d}", f"{h}.{mi:02d}"]))


def price(r: random.Random, lang: str) -> str:
    n = r.choice([r.randint(12, 99), r.randint(100, 999), r.randint(1000, 48000)])
    c = r.randint(0, 99)
    us = f"{n:,}.{c:02d}"
    eu = f"{n:,}".replace(",", ".") + f",{c:02d}"
    return r.choice({"en": [f"${us}", f"£{n:,}", f"${n:,}", f"US$ {us}", f"€{n:,}", f"R{n:,}"],
                     "de": [f"{eu} €", f"€ {eu}", f"{n} EUR", f"CHF {n}.–"], "fr": [f"{eu} €", f"{n} € HT",
                                                                                    f"{n} euros"],
                     "es": [f"{eu} €", f"${n:,} MXN", f"{n} euros"], "it": [f"€ {eu}", f"{n} euro"],
                     "nl": [f"€ {eu}", f"€{n},-"], "pt": [f"{eu} €", f"R$ {eu}"], "pl": [f"{eu} zł", f"{n} PLN"],
                     "sv": [f"{n} kr", f"{n:,} SEK".replace(",", " ")], "tr": [f"{eu} TL", f"₺{n}"]}[lang])


def postcode(r: random.Random, lang: str) -> str:
    L = "ABCDEFGHJKLMNPRSTUWXYZ"
    return r.choice({"en": [f"{r.choice(L)}{r.choice(L)}{r.randint(1, 20)} {r.randint(1, 9)}{r.choice(L)}{r.choice(L)}",
                            f"{r.choice(['NY', 'CA', 'TX', 'WA'])} {digits(r, 5)}", f"NSW {r.randint(2000, 2999)}"],
                     "de": [f"{lead_digits(r, 5)} {r.choice(['Berlin', 'München', 'Köln', 'Hamburg', 'Leipzig'])}",
                            f"A-{lead_digits(r, 4)} Wien", f"CH-{lead_digits(r, 4)} Zürich"],
                     "fr": [f"{lead_digits(r, 5)} {r.choice(['Paris', 'Lyon', 'Nantes', 'Lille'])}",
                            f"{lead_digits(r, 4)} Bruxelles"],
                     "es": [f"{lead_digits(r, 2, '0')}{digits(r, 3)} {r.choice(['Madrid', 'Sevilla', 'Bilbao'])}",
                            f"C.P. {lead_digits(r, 5)}"],
                     "it": [f"{lead_digits(r, 5)} {r.choice(['Milano', 'Torino', 'Bologna'])}"],
                     "nl": [f"{lead_digits(r, 4)} {r.choice(L)}{r.choice(L)} "
                            f"{r.choice(['Utrecht', 'Leiden', 'Delft'])}"],
                     "pt": [f"{lead_digits(r, 4)}-{digits(r, 3)} Lisboa", f"CEP {lead_digits(r, 5)}-{digits(r, 3)}"],
                     "pl": [f"{digits(r, 2)}-{digits(r, 3)} {r.choice(['Kraków', 'Poznań', 'Gdańsk'])}"],
                     "sv": [f"{lead_digits(r, 3)} {digits(r, 2)} {r.choice(['Göteborg', 'Malmö', 'Uppsala'])}"],
                     "tr": [f"{lead_digits(r, 5)} {r.choice(['Kadıköy/İstanbul', 'Çankaya/Ankara'])}"]}[lang])


def ref_number(r: random.Random, kind: str) -> str:
    """An identifier that is not a phone number; several look like one on purpose."""
    L = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return r.choice({
        "order": [f"#{r.choice(L)}-{lead_digits(r, 5)}", f"{lead_digits(r, 3)}-{digits(r, 7)}-{digits(r, 7)}",
                  f"{lead_digits(r, 3)}-{digits(r, 5)}",
                  f"SO-{digits(r, 6)}", f"#{lead_digits(r, 7)}", f"{lead_digits(r, 4)} {digits(r, 4)} {digits(r, 3)}",
                  f"W{lead_digits(r, 9)}"],
        "invoice": [f"INV-{r.randint(2023, 2026)}-{digits(r, 4)}", f"{r.randint(2023, 2026)}-{digits(r, 4)}",
                    f"F{digits(r, 2)}/{digits(r, 5)}", f"RE-{lead_digits(r, 6)}",
                    f"{lead_digits(r, 3)} {digits(r, 3)} {digits(r, 3)}"],
        "ticket": [f"#{lead_digits(r, 5)}", f"TCK-{lead_digits(r, 6)}", f"INC{digits(r, 7)}",
                   f"[#{lead_digits(r, 4)}-{digits(r, 3)}]",
                   f"{r.choice(L)}{r.choice(L)}-{lead_digits(r, 4)}"],
        "room": [f"{r.randint(1, 6)}.{r.randint(1, 40):02d}", f"B{r.randint(1, 4)}.{digits(r, 2)}",
                 f"{lead_digits(r, 3)}",
                 f"{r.choice(L)}-{lead_digits(r, 3)}", f"{r.randint(1, 9)}{r.choice(L)}"],
        "account": [f"{lead_digits(r, 5)}", f"{lead_digits(r, 4)} {digits(r, 4)} {digits(r, 2)}",
                    f"CUST-{digits(r, 6)}", f"{lead_digits(r, 8)}"],
        "tracking": [f"1Z {digits(r, 3)} {r.choice(L)}{r.choice(L)}{digits(r, 1)} {digits(r, 2)} {digits(r, 4)} "
                     f"{digits(r, 4)}",
                     f"JJD{digits(r, 15)}", f"00{digits(r, 18)}", f"{r.choice(L)}{r.choice(L)}{digits(r, 9)}GB",
                     f"{lead_digits(r, 4)} {digits(r, 4)} {digits(r, 4)}"],
        "iban": [f"{c}{digits(r, 2)} {' '.join(digits(r, 4) for _ in range(n))}{' ' + digits(r, 2) if n == 4 else ''}"
                 for c, n in (("DE", 4), ("NL", 3), ("FR", 5), ("ES", 5), ("IT", 5), ("PL", 6), ("BE", 3))],
        "error": [f"0x{r.randint(0x80000000, 0x8FFFFFFF):08X}", f"ERR-{lead_digits(r, 4)}", f"E{lead_digits(r, 3)}",
                  f"HTTP {r.choice([403, 500, 502, 504])}",
                  f"code {lead_digits(r, 6)}"],
        "code": [f"{lead_digits(r, 3)} {digits(r, 3)}", f"{lead_digits(r, 6)}", f"{lead_digits(r, 4)}"],
        "short": [f"{r.choice(['112', '911', '999', '116 117', '0800 22 11', '1414'])}", f"ext. {lead_digits(r, 3)}",
                  f"{lead_digits(r, 4)}"],
        "flight": [f"{r.choice(['LH', 'BA', 'AF', 'IB', 'KL', 'TK', 'LO', 'SK'])} {lead_digits(r, r.choice([3, 4]))}"],
        "vat": [f"DE{lead_digits(r, 9)}", f"GB {lead_digits(r, 3)} {digits(r, 4)} {digits(r, 2)}",
                f"FR{digits(r, 2)} {lead_digits(r, 9)}",
                f"NL{lead_digits(r, 9)}B01", f"HRB {lead_digits(r, 5)}"],
    }[kind])
