"""E-mail kinds of the demo's messages, each a builder ``(random, lang) -> (text, label)``; the other
kinds (chats, notes, forms, texts, notifications...) are in message_other.py.

A builder composes a message from parts (message_parts.py) and phrases (message_phrases.py) and
knows who wrote it, so it writes the label with the text. The labelling conventions (those of
unseen.jsonl):

* the contact is the message's *writer*: the sender of a reply (not the quoted sender), the
  forwarder (not the forwarded sender), the caller of a voicemail, the visitor of a live chat, the
  person spoken with in a call note (not the note's author), the submitter of a web form;
* each value exactly as written in the message; a value the writer does not give is null, even when
  other people's addresses and phones are in the message (cc lines, "ask Maria", quoted signatures);
* the name is what the writer is called in the message, its most complete form (first name only
  when that is all there is), without honorific (``Dr.``, ``Frau``, ``Monsieur``...);
* a message with no identifiable writer (notification, automated reply, unsigned note) is all null.
"""

from __future__ import annotations

import random

import message_numbers as mn
import message_parts as mp
from message_phrases import NUMBER_SLOTS, SLOT, P, cap, fill, pick

Label = dict[str, str | None]
Built = tuple[str, Label]


def label(name: str | None, email: str | None = None, phone: str | None = None) -> Label:
    return {"name": name, "email": email, "phone": phone}


def new_people(r: random.Random, lang: str, n: int, same_domain: bool = False) -> list[mp.Person]:
    taken: set[str] = set()
    domain = mp.company(r, lang)[1] if same_domain else None
    return [mp.person(r, lang, taken, domain if i < 2 else None) for i in range(n)]


def make_greeting(r: random.Random, lang: str, rec: mp.Person | None) -> str:
    if rec is None or r.random() < 0.2:
        return pick(r, lang, "greet_generic")
    formal = f"greet_formal_{rec.gender}"
    if formal in P[lang] and r.random() < 0.35:
        return fill(r, lang, pick(r, lang, formal), last=rec.last)
    if lang == "en" and r.random() < 0.15:
        t, who = rec.titled(r, surname_only=True)
        return f"Dear {t} {who},"
    options = pick_all(lang, "greet_named") + list(P[lang].get(f"greet_named_{rec.gender}", []))
    return fill(r, lang, r.choice(options), n=rec.first)


QUIET = 0.75  # share of bodies without dates, prices, order numbers...: most real messages have none


def sentences(r: random.Random, lang: str, n: int) -> list[str]:
    """``n`` different body sentences (fewer if the language has fewer); now and then only ones without
    numbers, so that the writer's phone is not always one number among many."""
    pool = pick_all(lang, "body")
    if r.random() < QUIET:
        pool = [s for s in pool if not set(SLOT.findall(s)) & NUMBER_SLOTS] or pool
    return [cap(fill(r, lang, s)) for s in r.sample(pool, min(n, len(pool)))]


def make_body(r: random.Random, lang: str, n: int) -> str:
    return " ".join(sentences(r, lang, n))


def shown_name(r: random.Random, w: mp.Person, p_first: float = 0.1, p_title: float = 0.15) -> tuple[str, str]:
    """(how the name is written, the label): full name, first name only, or with an honorific."""
    x = r.random()
    if x < p_first:
        return w.first, w.first
    if x < p_first + p_title:
        t, who = w.titled(r)
        return f"{t} {who}", who
    if w.native and r.random() < 0.6:
        return f"{w.full} ({w.native})", w.full
    return w.full, w.full


def labelled_contact(r: random.Random, lang: str, w: mp.Person, phone: bool, email: bool) -> list[str]:
    """The writer's phone and/or address as signature lines ("Tel. ...", "E-mail: ..."), in random order."""
    lines = []
    if phone:
        lines.append(pick(r, lang, "phone_label") + w.phone)
    if email:
        lines.append(pick(r, lang, "email_label") + w.email)
    r.shuffle(lines)
    return lines


def signature_block(r: random.Random, lang: str, w: mp.Person, phone: bool, email: bool, shown: str,
               company: bool = True) -> str:
    lines = [shown]
    if company and r.random() < 0.7:
        co = mp.company(r, lang, (w,))[0]
        job = r.choice(mp.JOBS[lang])
        lines += r.choice([[job, co], [f"{job} | {co}"], [co], [f"{job}, {co}"], [job]])
    contact = labelled_contact(r, lang, w, phone, email)
    if len(contact) == 2 and r.random() < 0.3:
        contact = [r.choice([" | ", " · ", "  ", " / "]).join(contact)]
    lines += contact
    if r.random() < 0.15:
        lines.append(mn.postcode(r, lang))
    return "\n".join(lines)


def company_footer(r: random.Random, lang: str, other: mp.Person) -> str:
    """A company footer naming someone who is not the writer, with registration numbers."""
    if lang == "de":
        return (f"{mp.company(r, lang)[0]} · Geschäftsführer: {other.full} · Amtsgericht "
                f"{r.choice(['Köln', 'München', 'Hamburg'])} "
                f"{mn.ref_number(r, 'vat').replace('DE', 'HRB ')} · USt-IdNr. {mn.ref_number(r, 'vat')}")
    return (f"{mp.company(r, lang)[0]} is registered in England and Wales No. {mp.digits(r, 8)}. Directors: "
            f"{other.full}. "
            "This email and any attachments are confidential.")


SENT_FROM = {"en": ["Sent from my iPhone", "Sent from Outlook for Android", "Sent from my Galaxy"],
             "de": ["Von meinem iPhone gesendet"], "fr": ["Envoyé de mon iPhone"], "es": ["Enviado desde mi móvil"],
             "it": ["Inviato da iPhone"], "nl": ["Verstuurd vanaf mijn iPhone"], "pt": ["Enviado do meu iPhone"]}


def pick_all(lang: str, key: str) -> list[str]:
    return list(P[lang].get(key) or P["en"][key])


def draw_fields(r: random.Random, p_phone: float, p_email: float) -> tuple[bool, bool]:
    return r.random() < p_phone, r.random() < p_email


def contact_sentence(r: random.Random, lang: str, w: mp.Person, phone: bool, email: bool) -> str:
    if phone and email:
        return fill(r, lang, pick(r, lang, "give_both"), p=w.phone, e=w.email)
    if phone:
        return fill(r, lang, pick(r, lang, "give_phone"), p=w.phone)
    if email:
        return fill(r, lang, pick(r, lang, "give_email"), e=w.email)
    return ""


# --------------------------------------------------------------------------------------- e-mails
def email(r: random.Random, lang: str) -> Built:
    """A plain e-mail signed by its writer: values in the signature or in the body."""
    w, rec, other = new_people(r, lang, 3)
    phone, mail = draw_fields(r, 0.8, 0.65)
    shown, name = shown_name(r, w)
    in_body = r.random() < 0.35
    parts = [make_greeting(r, lang, rec), "", make_body(r, lang, r.randint(1, 3))]
    if in_body and (phone or mail):
        parts[-1] += " " + contact_sentence(r, lang, w, phone, mail)
    if r.random() < 0.4:
        parts[-1] += " " + pick(r, lang, "thanks_close")
    sig = signature_block(r, lang, w, phone and not in_body, mail and not in_body, shown)
    parts += ["", pick(r, lang, "signoff"), sig]
    if r.random() < 0.12 and lang in ("en", "de"):
        parts += ["", company_footer(r, lang, other)]
    return "\n".join(parts).replace("\n\n\n", "\n\n").strip(), label(name, w.email if mail else None,
                                                                       w.phone if phone else None)


def reply(r: random.Random, lang: str) -> Built:
    """A reply above a quoted message: the quoted sender's name, address and phone are someone else's."""
    w, q = new_people(r, lang, 2)
    phone, mail = draw_fields(r, 0.55, 0.45)
    top = [fill(r, lang, pick(r, lang, "reply"))]
    if r.random() < 0.5:
        top[0] += " " + make_body(r, lang, 1)
    if r.random() < 0.5:
        name = w.first if r.random() < 0.8 else w.first.lower()
        sign = name
        phone, mail = r.random() < 0.35, False  # a number in the reply's text, none in a signature
        if phone:
            top[0] += " " + fill(r, lang, pick(r, lang, "give_phone"), p=w.phone)
        if r.random() < 0.2:
            sign, name = w.full, w.full
    else:
        shown, name = shown_name(r, w, p_first=0.25)
        sign = signature_block(r, lang, w, phone, mail, shown, company=r.random() < 0.5)
    if r.random() < 0.15:
        sign += "\n\n" + r.choice(SENT_FROM.get(lang, SENT_FROM["en"]))
    top += ["", (pick(r, lang, "signoff") + "\n" if r.random() < 0.4 else "") + sign]
    quoted = [make_greeting(r, lang, w), make_body(r, lang, r.randint(1, 2))]
    q_shown = q.full if r.random() < 0.7 else q.first
    q_line = q.phone if r.random() < 0.5 else pick(r, lang, "phone_label") + q.phone
    q_sig = [q_shown] + ([q_line] if r.random() < 0.75 else [])
    quoted += [pick(r, lang, "signoff"), *q_sig]
    head = fill(r, lang, pick(r, lang, "wrote"), x=q.full, xe=q.email)
    if r.random() < 0.3:  # Apple Mail quotes the header line too
        body = "\n".join(f"> {line}" if line else ">" for line in [head, "", *quoted])
    else:
        body = head + "\n" + "\n".join(f"> {line}" if line else ">" for line in quoted)
    text = "\n".join(top) + "\n\n" + body
    return text, label(name, w.email if mail else None, w.phone if phone else None)


def outlook(r: random.Random, lang: str) -> Built:
    """The writer's own From/To/Cc header on top (the From address is theirs), maybe an original below."""
    w, rec, cc1, cc2 = new_people(r, lang, 4, same_domain=r.random() < 0.5)
    h = dict(zip(("from", "sent", "to", "cc", "subject", "date", "bcc"), pick_all(lang, "hdr")))
    show_name = r.random() < 0.8
    lines = [f"{h['from']} {w.full} <{w.email}>" if show_name else f"{h['from']} {w.email}",
             f"{r.choice([h['sent'], h['date']])} {mn.date(r, lang)} {mn.time_(r, lang)}",
             f"{h['to']} {rec.full} <{rec.email}>"]
    if r.random() < 0.6:
        lines.append(f"{h['cc']} " + "; ".join(f"{c.full} <{c.email}>" if r.random() < 0.6 else c.email
                                               for c in ([cc1, cc2] if r.random() < 0.5 else [cc1])))
    if r.random() < 0.15:
        lines.append(f"{h['bcc']} {cc2.email}")
    lines.append(f"{h['subject']} Re: {cap(pick(r, lang, 'topics'))}")
    phone = r.random() < 0.5
    sign_first = r.random() < 0.4
    sign = w.first if sign_first else signature_block(r, lang, w, phone, False, w.full, company=r.random() < 0.5)
    phone = phone and not sign_first
    text = "\n\n".join(["\n".join(lines), make_greeting(r, lang, rec), make_body(r, lang, r.randint(1, 2)), sign])
    if r.random() < 0.5:
        text += (f"\n\n{r.choice(pick_all(lang, 'fwd_marker')[-1:] + ['-----Original Message-----'])}\n"
                 f"{h['from']} {rec.full} <{rec.email}>\n{h['sent']} {mn.date(r, lang)}\n{h['to']} {w.full}\n"
                 f"{h['subject']} {cap(pick(r, lang, 'topics'))}\n\n{make_body(r, lang, 1)} "
                 + fill(r, lang, pick(r, lang, "give_phone"), p=rec.phone) + f" {rec.first}")
    name = w.full if show_name else (w.first if sign_first else w.full)
    return text, label(name, w.email, w.phone if phone else None)


def cc_lines(r: random.Random, lang: str) -> Built:
    """To/Cc/Bcc lines full of other people's addresses; the writer signs below and may give none."""
    w, a, b, c = new_people(r, lang, 4, same_domain=True)
    h = dict(zip(("from", "sent", "to", "cc", "subject", "date", "bcc"), pick_all(lang, "hdr")))
    lines = [f"{h['to']} {a.email}" + (f", {b.email}" if r.random() < 0.5 else ""), f"{h['cc']} {c.full} <{c.email}>"]
    if r.random() < 0.3:
        lines.append(f"{h['bcc']} {b.email}")
    lines.append(f"{h['subject']} {cap(pick(r, lang, 'topics'))}")
    phone, mail = draw_fields(r, 0.7, 0.5)
    shown, name = shown_name(r, w, p_first=0.3)
    text = ("\n".join(lines) + "\n\n" + make_greeting(r, lang, a if r.random() < 0.5 else None) + "\n\n"
            + make_body(r, lang, r.randint(1, 2)) + "\n\n" + pick(r, lang, "signoff") + "\n"
            + signature_block(r, lang, w, phone, mail, shown))
    return text, label(name, w.email if mail else None, w.phone if phone else None)


def forward(r: random.Random, lang: str) -> Built:
    """A short note from the forwarder above a forwarded message: the forwarder is the contact."""
    f, q = new_people(r, lang, 2)
    note = fill(r, lang, pick(r, lang, "fwd_note"))
    x = r.random()
    phone = False
    if x < 0.2:  # unsigned: nobody to name
        sign, name = "", None
    elif x < 0.75:
        sign, name = r.choice([f.first, f"{pick(r, lang, 'signoff')}\n{f.first}", f"- {f.first}"]), f.first
    else:
        phone = r.random() < 0.5
        sign, name = signature_block(r, lang, f, phone, False, f.full, company=False), f.full
    h = dict(zip(("from", "sent", "to", "cc", "subject", "date", "bcc"), pick_all(lang, "hdr")))
    team = f"{r.choice(['info', 'sales', 'office', 'support', 'kontakt', 'contact', 'hello'])}@{mp.company(r, lang)[1]}"
    q_phone, q_mail = r.random() < 0.7, r.random() < 0.3
    fwd = [pick_all(lang, "fwd_marker")[0] if r.random() < 0.8 else r.choice(pick_all(lang, "fwd_marker")),
           f"{h['from']} {q.full} <{q.email}>", f"{h['date']} {mn.date(r, lang)}",
           f"{h['subject']} {cap(pick(r, lang, 'topics'))}", f"{h['to']} {team}", "",
           make_greeting(r, lang, None), make_body(r, lang, 1) + " " + contact_sentence(r, lang, q, q_phone, q_mail),
           q.full]
    text = note + ("\n\n" + sign if sign else "") + "\n\n" + "\n".join(fwd)
    return text, label(name, None, f.phone if phone else None)


def several(r: random.Random, lang: str) -> Built:
    """Several people named: a colleague to ask or loop in, a new point of contact, writing on behalf."""
    w, x, rec = new_people(r, lang, 3, same_domain=True)
    phone, mail = draw_fields(r, 0.75, 0.7)
    shown, name = shown_name(r, w, p_first=0.15)
    kind = r.choice(["ask_other", "loop_in", "other_contact", "behalf", "ps"])
    if kind == "behalf" and lang == "en":
        extra = (f"{x.first} asked me to get in touch on {r.choice(['his', 'her', 'their'])} behalf to schedule "
                 f"{pick(r, lang, 'topics')}. "
                 f"{x.first} is available on {mn.date(r, lang)} or {mn.date(r, lang)}, anytime between "
                 f"{mn.time_(r, lang)} and {mn.time_(r, lang)}.")
        sig = signature_block(r, lang, w, phone, mail, shown, company=False) + f"\nExecutive Assistant to {x.full}"
    else:
        if kind in ("behalf", "ps"):
            kind = "other_contact"
        extra = fill(r, lang, pick(r, lang, kind), x=x.full if r.random() < 0.8 else x.first, xe=x.email, xp=x.phone)
        sig = signature_block(r, lang, w, phone, mail, shown)
    body = make_body(r, lang, r.randint(1, 2))
    parts = [make_greeting(r, lang, rec), "", body + " " + extra if r.random() < 0.5 else body + "\n\n" + extra]
    if r.random() < 0.3:
        parts[-1] += "\n\n" + pick(r, lang, "thanks_close")
    parts += ["", pick(r, lang, "signoff"), sig]
    return "\n".join(parts).strip(), label(name, w.email if mail else None, w.phone if phone else None)


def long_email(r: random.Random, lang: str) -> Built:
    """Several paragraphs full of numbers that are not phones; the contact is at the very end."""
    w, rec = new_people(r, lang, 2)
    phone, mail = draw_fields(r, 0.75, 0.7)
    shown, name = shown_name(r, w, p_first=0.05, p_title=0.2)
    said = sentences(r, lang, r.randint(4, 8))
    marks = sorted(r.sample(range(1, len(said)), r.randint(1, 2)))
    paras = [" ".join(said[a:b]) for a, b in zip([0, *marks], [*marks, len(said)])]
    last = contact_sentence(r, lang, w, phone, mail)
    text = "\n\n".join([make_greeting(r, lang, rec), *paras, last or pick(r, lang, "thanks_close"),
                        pick(r, lang, "signoff") + "\n" + shown]).replace("\n\n\n", "\n\n")
    return text, label(name, w.email if mail else None, w.phone if phone else None)
