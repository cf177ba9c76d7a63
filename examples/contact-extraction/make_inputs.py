"""Write the contact-extraction demo's raw inputs: varied messages, deterministic for a seed.

    python examples/contact-extraction/make_inputs.py --n 400 --seed 7

Writes ``inputs.jsonl`` (``{"id", "text"}``: what the teacher sees) and ``references.jsonl``
(``{"id", "name", "email", "phone"}``: the true contact, used only to report exact-match rates,
never by the pipeline). The messages are built from parts, not filled into a few templates, so
that an adapter cannot pass by learning one generator's layout: email signatures, forwarded mail,
chatty texts, CRM notes, voicemail transcripts, several languages, international phone formats,
names with accents, hyphens, apostrophes, particles and honorifics, and distractor numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import unicodedata
from pathlib import Path

FIRST = ["Ann", "José", "Zoë", "Søren", "Łukasz", "François", "Anaïs", "Björn", "Priya", "Wei", "Aisha",
         "Mateo", "Olga", "Kenji", "Fatima", "Liam", "Chloé", "Raúl", "Ingrid", "Tomás", "Mei", "Oluwaseun",
         "Hannah", "Dmitri", "Leila", "Noah", "Saoirse", "Yusuf", "Camille", "Jürgen", "Ana-Maria",
         "Jean-Luc", "Mary-Kate", "Siobhán", "Nikolai", "Amélie", "Carlos", "Grace", "Hiroshi", "Elif",
         "Marta", "Ravi", "Lucía", "Émile", "Ngozi", "Sven", "Daniela", "Kofi", "Astrid", "Minh"]
LAST = ["Lee", "García", "O'Brien", "Müller", "Nowak", "Dubois", "Smith-Jones", "Andersson", "Patel",
        "Zhang", "Khan", "Rossi", "Ivanova", "Tanaka", "Haddad", "Murphy", "Lefèvre", "Fernández",
        "Johansson", "D'Angelo", "van der Berg", "de la Cruz", "Okafor", "Schmidt", "Nguyen", "Kowalski",
        "Østergaard", "MacLeod", "Al-Sayed", "Papadopoulos", "Brown", "Moreau", "Silva", "Yılmaz",
        "O'Connor", "Costa", "Fischer", "Kim", "Mensah", "Larsen", "Hernández-López", "Björk", "Wright",
        "Novák", "St. Clair", "Achterberg", "Ferreira", "Abiodun", "Lindqvist", "McAllister"]
TITLES = ["Dr.", "Mr.", "Ms.", "Mrs.", "Prof.", "Dr", "Mx."]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.uk", "acme-corp.com", "web.de", "orange.fr", "studio.io",
           "example.org", "mail.company.co", "uni-heidelberg.de", "gov.au", "proton.me", "icloud.com",
           "consulting.com.br", "startup.ai", "libero.it", "hospital.nhs.uk", "law-firm.ca"]
PHONES = [  # (format producing text from random digits)
    lambda r: f"({r.randint(201, 989)}) {r.randint(200, 999)}-{r.randint(1000, 9999)}",
    lambda r: f"{r.randint(201, 989)}-{r.randint(200, 999)}-{r.randint(1000, 9999)}",
    lambda r: f"+1 {r.randint(201, 989)} {r.randint(200, 999)} {r.randint(1000, 9999)}",
    lambda r: f"{r.randint(201, 989)}.{r.randint(200, 999)}.{r.randint(1000, 9999)}",
    lambda r: f"+44 20 {r.randint(7000, 8999)} {r.randint(1000, 9999)}",
    lambda r: f"07{r.randint(100, 999)} {r.randint(100000, 999999)}",
    lambda r: f"+49 30 {r.randint(1000000, 9999999)}",
    lambda r: f"+49 (0) 89 {r.randint(100, 999)} {r.randint(1000, 9999)}",
    lambda r: "+33 6 " + " ".join(f"{r.randint(10, 99)}" for _ in range(4)),
    lambda r: f"+91 {r.randint(70000, 99999)} {r.randint(10000, 99999)}",
    lambda r: f"+81 3-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
    lambda r: f"+61 2 {r.randint(1000, 9999)} {r.randint(1000, 9999)}",
    lambda r: f"+55 11 9{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
    lambda r: f"+34 {r.randint(600, 699)} {r.randint(100, 999)} {r.randint(100, 999)}",
    lambda r: f"+353 87 {r.randint(100, 999)} {r.randint(1000, 9999)}",
    lambda r: f"{r.randint(201, 989)}-{r.randint(200, 999)}-{r.randint(1000, 9999)} ext. {r.randint(10, 999)}",
    lambda r: f"+27 82 {r.randint(100, 999)} {r.randint(1000, 9999)}",
    lambda r: f"+46 70-{r.randint(100, 999)} {r.randint(10, 99)} {r.randint(10, 99)}",
]
COMPANIES = ["Acme Corp", "Northwind Traders", "Blue Fin Analytics", "Hôtel du Lac", "Müller & Söhne GmbH",
             "Greenleaf Studio", "Kite Robotics", "St. Mary's Hospital", "Oakridge Legal LLP", "Sunrise Dental"]
JOBS = ["Head of Procurement", "Sales Manager", "Senior Engineer", "Office Manager", "Research Fellow",
        "Founder & CEO", "Account Executive", "Paralegal", "Practice Manager", "Product Designer"]
TOPICS = ["the quote for 250 units", "our meeting on Thursday", "invoice #48213", "the apartment viewing",
          "the Q3 report", "your order 7731-B", "the conference in Lisbon", "the broken dishwasher",
          "a dental appointment", "the job posting", "the lease renewal", "the shipment due 12/03"]


def _email(r: random.Random, first: str, last: str) -> str:
    def ascii_(s: str) -> str:
        s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
        return "".join(c for c in s.lower() if c.isalnum())

    f, l_ = ascii_(first) or "x", ascii_(last) or "y"
    local = r.choice([f"{f}.{l_}", f"{f[0]}{l_}", f"{f}{r.randint(1, 99)}", f"{l_}.{f}", f"{f}_{l_}",
                      f"{f}+work", f"{f[0]}.{l_}", f"contact.{l_}"])
    return f"{local}@{r.choice(DOMAINS)}"


def _contact(r: random.Random) -> dict:
    first, last = r.choice(FIRST), r.choice(LAST)
    name = f"{first} {last}" if r.random() > 0.1 else first
    # ~30 % of messages carry no email: with fewer, the adapter learned to invent one (measured)
    has_email, has_phone = r.random() > 0.4, r.random() > 0.25
    if not (has_email or has_phone):
        has_email = True
    return {"name": name, "first": first, "title": r.choice(TITLES) if r.random() < 0.2 else None,
            "email": _email(r, first, last) if has_email else None,
            "phone": r.choice(PHONES)(r) if has_phone else None}


def _styles():
    def signature(r, c):
        shown = f"{c['title']} {c['name']}" if c["title"] else c["name"]
        lines = [shown, r.choice(JOBS) + (f" | {r.choice(COMPANIES)}" if r.random() < 0.7 else "")]
        if c["phone"]:
            lines.append(r.choice(["T: ", "Tel: ", "Mobile: ", "M ", "Phone: ", "📞 ", ""]) + c["phone"])
        if c["email"]:
            lines.append(r.choice(["E: ", "Email: ", "", "✉ "]) + c["email"])
        body = r.choice([f"Thanks for the update on {r.choice(TOPICS)}. Let me know if you need anything else.",
                         f"Please find attached the documents regarding {r.choice(TOPICS)}.",
                         f"Just following up on {r.choice(TOPICS)} — could you confirm by Friday?"])
        return f"{r.choice(['Hi team,', 'Hello,', 'Dear Sir or Madam,', 'Hi there,'])}\n\n{body}\n\n" \
               f"{r.choice(['Best regards,', 'Kind regards,', 'Cheers,', 'Thanks,', 'Saludos,'])}\n--\n" \
               + "\n".join(lines)

    def forwarded(r, c):
        who = f"{c['name']} <{c['email']}>" if c["email"] else c["name"]
        tail = f"\n\nYou can call me on {c['phone']}." if c["phone"] else ""
        return (f"{r.choice(['FYI, see below.', 'Forwarding this one to you.', 'Can you handle this?'])}\n\n"
                f"---------- Forwarded message ---------\nFrom: {who}\nDate: Mon, {r.randint(1, 28)} Oct 2026 "
                f"{r.randint(8, 18)}:{r.randint(10, 59)}\nSubject: Re: {r.choice(TOPICS)}\n\n"
                f"{r.choice(['Hello,', 'Hi,'])} I'm writing about {r.choice(TOPICS)}.{tail}")

    def chatty(r, c):
        bits = [r.choice(["hey!! ", "hiya, ", "yo ", "hi :) ", "omg hi "]),
                r.choice([f"it's {c['first']} from the meetup", f"{c['name']} here", f"this is {c['name']} lol",
                          f"{c['first']} here (the one with the dog)"])]
        if c["phone"]:
            bits.append(r.choice([f", text me at {c['phone']}", f". my cell is {c['phone']}",
                                  f" — {c['phone']} is my number"]))
        if c["email"]:
            bits.append(r.choice([f" or email {c['email']}", f", my email's {c['email']}",
                                  f". {c['email']} works too"]))
        bits.append(r.choice([" 👍", "!! see u", " thx", "", " - talk soon"]))
        if c["name"] != c["first"] and "lol" not in bits[1] and "here" not in bits[1]:
            pass
        return "".join(bits)

    def crm(r, c):
        parts = [f"Lead: {c['name']}", f"Source: {r.choice(['webinar', 'referral', 'trade show', 'website'])}"]
        if c["email"]:
            parts.append(f"Email: {c['email']}")
        if c["phone"]:
            parts.append(f"Phone: {c['phone']}")
        parts.append(f"Notes: interested in {r.choice(TOPICS)}; budget ~${r.randint(2, 90)}k")
        r.shuffle(parts)
        return r.choice(["; ", "\n", " | "]).join(parts)

    def voicemail(r, c):
        shown = f"{c['title']} {c['name']}" if c["title"] else c["name"]
        s = (f"Voicemail transcript ({r.randint(0, 2)}:{r.randint(10, 59)}): Hi, this is {shown} calling about "
             f"{r.choice(TOPICS)}.")
        if c["phone"]:
            s += f" Please call me back at {c['phone']}."
        if c["email"]:
            s += f" Or drop me a line at {c['email']}."
        return s + r.choice([" Thanks, bye.", " Have a good one.", ""])

    def foreign(r, c):
        lang = r.choice(["es", "fr", "de", "it"])
        intro = {"es": f"Hola, soy {c['name']}.", "fr": f"Bonjour, je m'appelle {c['name']}.",
                 "de": f"Guten Tag, mein Name ist {c['name']}.", "it": f"Ciao, sono {c['name']}."}[lang]
        out = [intro]
        if c["phone"]:
            out.append({"es": f"Mi teléfono es {c['phone']}.", "fr": f"Mon numéro : {c['phone']}.",
                        "de": f"Telefon: {c['phone']}.", "it": f"Il mio numero è {c['phone']}."}[lang])
        if c["email"]:
            out.append({"es": f"Correo: {c['email']}", "fr": f"Courriel : {c['email']}",
                        "de": f"E-Mail: {c['email']}", "it": f"Email: {c['email']}"}[lang])
        return " ".join(out)

    def inquiry(r, c):
        shown = f"{c['title']} {c['name']}" if c["title"] else c["name"]
        s = (f"Good {r.choice(['morning', 'afternoon', 'evening'])}, my name is {shown} and I'd like to ask about "
             f"{r.choice(TOPICS)}. We need it by {r.randint(1, 28)}/{r.randint(1, 12)} and the budget is "
             f"{r.randint(100, 9000)} EUR.")
        contact = []
        if c["email"]:
            contact.append(f"reach me at {c['email']}")
        if c["phone"]:
            contact.append(f"call {c['phone']}")
        return s + (" You can " + " or ".join(contact) + "." if contact else "")

    return [signature, forwarded, chatty, crm, voicemail, foreign, inquiry]


def make(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    r = random.Random(seed)
    styles = _styles()
    inputs, refs, seen = [], [], set()
    while len(inputs) < n:
        c = _contact(r)
        text = r.choice(styles)(r, c)
        if text in seen:
            continue
        seen.add(text)
        # The contact's name as written in the message, without an honorific.
        name = c["name"] if c["name"] in text else c["first"]
        rid = hashlib.sha256(text.encode()).hexdigest()[:12]
        inputs.append({"id": rid, "text": text})
        refs.append({"id": rid, "name": name, "email": c["email"], "phone": c["phone"]})
    return inputs, refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    a = ap.parse_args()
    inputs, refs = make(a.n, a.seed)
    for name, rows in (("inputs.jsonl", inputs), ("references.jsonl", refs)):
        (a.out / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    print(f"wrote {len(inputs)} inputs to {a.out / 'inputs.jsonl'}")


if __name__ == "__main__":
    main()
