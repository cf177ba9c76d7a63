"""Rule checks for the contact-extraction task (``score.rules.custom`` in pipeline.yaml).

They need no reference answer, and they hold for every correct label of any message, whoever else
it names: nothing here requires a value to be present (a notification has no contact; a reply may
give only a first name) or asks for "the" address of a message (cc lines and quoted senders bring
other people's). What they refuse is what a correct label never is:

* a value not copied from the message character for character, or only a piece of what is written
  there (a phone missing its first digits, an address cut short, a name cut mid-word);
* a phone with fewer than 7 digits, with letters (an extension such as ``ext. 12`` aside) or an ``@``,
  or one the message calls an order, invoice, account or tracking number;
  an email that is not an address as written (``jan at firma dot de`` is not: the label is null);
* a name with an honorific in front (``Dr.``, ``Frau``, ``Monsieur``...), digits, ``@``, a line
  break or more than six words;
* an address or phone found only in a quoted or forwarded part (``>`` lines, below ``... wrote:``,
  ``-----Original Message-----``, ``---------- Forwarded message``) or an address found only on
  To/Cc/Bcc lines: those belong to someone other than the writer.

Each check returns ``(score 0-5, reason)``; 5 means it passed.
"""

from __future__ import annotations

import json
import re

KEYS = ("name", "email", "phone")
EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
EXTENSION = re.compile(r"\(?\s*(ext|extn|x|poste|int|toestel|ramal|wew|ankn|dahili|durchwahl)\.?\s*\d{1,5}\)?$", re.I)
HONORIFICS = {"dr", "mr", "mrs", "ms", "mx", "miss", "prof", "sir", "madam", "frau", "herr", "monsieur", "madame",
              "mme",
              "mlle", "maître", "sr", "sra", "srta", "señor", "señora", "don", "doña", "dña", "lic", "ing", "dott",
              "dottssa", "sig", "sigra", "avv", "dhr", "mevr", "ir", "eng", "pan", "pani", "mgr", "inż", "fru", "av"}
# Lines that start an earlier message: everything below them is quoted or forwarded.
QUOTE_START = re.compile(
    r"^(.*\b(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|napisał|skrev|yazdı)\s?:\s*$"
    r"|-+\s*(Original Message|Forwarded message|Weitergeleitete Nachricht|Ursprüngliche Nachricht|Message transféré"
    r"|Message original|Mensaje reenviado|Messaggio inoltrato|Doorgestuurd bericht|Mensagem encaminhada"
    r"|Przekazana wiadomość|Vidarebefordrat meddelande|İletilen ileti)\s*-*"
    r"|Begin forwarded message:|_{20,})", re.I)
# What a number is called right before it, when it is not a phone: "order 4471-2209", "Rechnung Nr. 2024 1187".
NOT_A_PHONE = re.compile(
    r"(order|invoice|ticket|account|ref|reference|tracking|iban|booking|case|customer|rechnung|bestellung|auftrag"
    r"|kundennummer|sendungsnummer|commande|facture|suivi|pedido|factura|seguimiento|ordine|fattura|bestelling"
    r"|factuur|klantnummer|encomenda|fatura|zamówienie|faktura|paczka|beställning|fakturan|kundnummer|sipariş|kargo)"
    r"\s*(number|no\.?|nr\.?|n°|n\.|#|:)?\s*[:#]?\s*\Z", re.I)
RECIPIENT_LINE = re.compile(r"^\s*(To|Cc|Bcc|An|À|Cci|Para|CC|CCO|A|Ccn|Aan|BCC|Do|DW|UDW|Till|Kopia|Hemlig kopia"
                            r"|Kime|Bilgi|Gizli)\s?:", re.I)


def _parse(output: str) -> dict | None:
    try:
        obj = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def _own_part(text: str) -> str:
    """The writer's own lines: the message above the first quoted or forwarded part, minus ``>`` lines."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if QUOTE_START.match(line.strip().lstrip("> ")):
            lines = lines[:i]
            break
    return "\n".join(line for line in lines if not line.lstrip().startswith(">"))


def _whole(text: str, value: str, key: str) -> bool:
    """``value`` occurs in ``text`` at least once as a whole: not continued by more of the same kind of token."""
    for m in re.finditer(re.escape(value), text):
        before, after = text[:m.start()], text[m.end():]
        if key == "phone":
            cut = (before[-1:] in tuple("0123456789+(") or re.search(r"[\d)][ .-]\Z", before)
                   or re.match(r"[ .-]?\d", after))
        elif key == "email":
            cut = re.search(r"[A-Za-z0-9._%+-]\Z", before) or re.match(r"[A-Za-z0-9-]|\.[A-Za-z0-9]", after)
        else:  # a letter of a spaced script right before or after (CJK writes names without spaces)
            cut = any(ch.isalnum() and ord(ch) < 0x2E80 for ch in before[-1:] + after[:1])
        if not cut:
            return True
    return False


def _name_problem(name: str) -> str | None:
    words = name.split()
    first = words[0].rstrip(".").replace(".", "").casefold() if words else ""
    if not words:
        return "is empty"
    if first in HONORIFICS:
        return "starts with an honorific; give the name alone"
    if any(ch.isdigit() for ch in name) or "@" in name or "\n" in name or len(words) > 6:
        return "does not look like a person's name"
    return None


def contact_fields(input_text: str, output: str) -> tuple[float, str]:
    """Every value is copied whole from the message, looks like what it is, and is not someone else's."""
    obj = _parse(output)
    if obj is None:
        return 0.0, "output is not a JSON object"
    if set(obj) != set(KEYS):
        return 0.0, f"output must have exactly the keys {', '.join(KEYS)}; got {', '.join(sorted(obj)) or 'none'}"
    problems = []
    own = _own_part(input_text)
    for key in KEYS:
        value = obj[key]
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} {value!r} must be a non-empty string or null")
            continue
        if value not in input_text:
            problems.append(f"{key} {value!r} is not copied from the message")
            continue
        if not _whole(input_text, value, key):
            problems.append(f"{key} {value!r} is only part of what the message writes there")
        if key == "phone":
            if all(NOT_A_PHONE.search(input_text[:m.start()]) for m in re.finditer(re.escape(value), input_text)):
                problems.append(f"phone {value!r} is written as an order, invoice, account or tracking number")
            core = EXTENSION.sub("", value)
            if sum(ch.isdigit() for ch in core) < 7 or any(ch.isalpha() for ch in core) or "@" in core:
                problems.append(f"phone {value!r} does not look like a phone number")
        elif key == "email" and not EMAIL.match(value):
            problems.append(f"email {value!r} is not an e-mail address as written (an obfuscated one is null)")
        elif key == "name" and (why := _name_problem(value)):
            problems.append(f"name {value!r} {why}")
        if key in ("email", "phone"):
            if value not in own:
                problems.append(f"{key} {value!r} appears only in a quoted or forwarded part: it is someone else's")
            elif key == "email" and all(RECIPIENT_LINE.match(line) and len(line) < 300  # a header, not flattened mail
                                        for line in own.splitlines() if value in line):
                problems.append(f"email {value!r} appears only on To/Cc/Bcc lines: it is a recipient's")
    if problems:
        return 0.0, "; ".join(problems)
    return 5.0, "every value is copied whole from the message and looks like what it is"
