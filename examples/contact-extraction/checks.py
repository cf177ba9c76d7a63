"""Rule checks for the contact-extraction task (``score.rules.custom`` in pipeline.yaml).

They need no reference answer: each value is checked against what the message itself shows. An
email address found in the message must be the one extracted; a phone must be copied as written and
look like a phone; a name must be copied from the message, without honorific, digits or ``@``.
Each check returns ``(score 0-5, reason)``; 5 means it passed.
"""

from __future__ import annotations

import json
import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE_HINT = re.compile(r"(?:\+\d[\d\s().-]{7,}\d|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}|\b0\d{4}\s\d{6}\b)")
HONORIFICS = ("dr", "mr", "ms", "mrs", "prof", "mx", "sir", "madam")


def _parse(output: str) -> dict | None:
    try:
        obj = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


def contact_fields(input_text: str, output: str) -> tuple[float, str]:
    """Every field agrees with what the message shows."""
    obj = _parse(output)
    if obj is None:
        return 0.0, "output is not a JSON object"
    problems = []
    # Addresses on quoted lines ("> ...", "... wrote:") belong to an earlier message's author.
    emails = EMAIL.findall("\n".join(line for line in input_text.splitlines()
                                     if not line.lstrip().startswith(">") and not line.rstrip().endswith("wrote:")))
    email = obj.get("email")
    if emails and email not in emails:
        problems.append(f"email should be one of {emails}, got {email!r}")
    if not emails and email is not None:
        problems.append(f"the message has no email address, got {email!r}")
    phone = obj.get("phone")
    if phone is not None:
        if not isinstance(phone, str) or phone not in input_text:
            problems.append(f"phone {phone!r} is not copied from the message")
        elif sum(ch.isdigit() for ch in phone) < 7 or "@" in phone:
            problems.append(f"phone {phone!r} does not look like a phone number")
    elif PHONE_HINT.search(input_text):
        problems.append(f"the message shows a phone number ({PHONE_HINT.search(input_text).group(0)!r}) "
                        "but phone is null")
    name = obj.get("name")
    if name is None:
        problems.append("name is null, but every message here is signed or introduced by someone")
    elif not isinstance(name, str) or name not in input_text:
        problems.append(f"name {name!r} is not copied from the message")
    else:
        first = name.split()[0].rstrip(".").lower() if name.split() else ""
        if first in HONORIFICS:
            problems.append(f"name {name!r} starts with an honorific; give the name alone")
        if any(ch.isdigit() for ch in name) or "@" in name or len(name.split()) > 5:
            problems.append(f"name {name!r} does not look like a person's name")
    if problems:
        return 0.0, "; ".join(problems)
    return 5.0, "name, email and phone agree with the message"
