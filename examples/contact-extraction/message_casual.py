"""Kinds where the writer is easy to mistake for someone else, or the values sit in running text:
messenger texts (a greeted friend's name first, the writer's number in a sentence, a full name
introduced and a first name signed), formal letters with a signature block (Germany, Austria,
Switzerland, the Netherlands, France...), and support threads where the agent is greeted and quoted.
Same conventions as message_mail.py: the name label is the fullest form the writer gives for
themselves (``I'm Ana Belén de la Torre ... Ana`` -> ``Ana Belén de la Torre``).
"""

from __future__ import annotations

import random

import message_numbers as mn
import message_parts as mp
from message_mail import Built, label, labelled_contact, make_body, make_greeting, new_people, pick_all, shown_name
from message_phrases import cap, fill, pick

# What a friend or colleague is asked for in a text, without numbers (the writer's phone is often the only one).
ASKS = {"en": ["can you send me the pics from Saturday?", "are we still on for tonight?",
               "could you check if the keys are at yours?", "I've got the spare chairs, when can I drop them off?",
               "the plumber cancelled again, any chance your guy could come by?",
               "just landed, phone's nearly dead", "got your parcel by mistake, it's at mine"],
        "de": ["kannst du mir die Fotos schicken?", "steht heute Abend noch?", "ich hab dein Paket angenommen.",
               "der Handwerker kommt erst nächste Woche.", "bin gerade gelandet, Akku fast leer."],
        "fr": ["tu peux m'envoyer les photos ?", "c'est toujours bon pour ce soir ?", "j'ai récupéré ton colis.",
               "le plombier a encore annulé."],
        "es": ["¿me pasas las fotos del sábado?", "¿seguimos con lo de esta noche?", "tengo tu paquete en casa.",
               "el fontanero canceló otra vez."],
        "it": ["mi mandi le foto di sabato?", "confermato per stasera?", "ho ritirato io il tuo pacco."],
        "nl": ["kun je me de foto's sturen?", "gaat het vanavond nog door?", "ik heb je pakketje aangenomen."],
        "pt": ["podes mandar-me as fotos?", "ainda está de pé hoje à noite?", "recebi a tua encomenda."],
        "pl": ["możesz mi wysłać zdjęcia?", "aktualne na dziś wieczór?", "odebrałam twoją paczkę."],
        "sv": ["kan du skicka bilderna?", "gäller det fortfarande i kväll?", "jag tog emot ditt paket."],
        "tr": ["fotoğrafları atabilir misin?", "bu akşam hâlâ geçerli mi?", "kargonu ben aldım."]}
# "X gave me your number": another person named in the text, never the contact.
VIA = {"en": "{x} gave me your details.", "de": "{x} hat mir deine Nummer gegeben.",
       "fr": "C'est {x} qui m'a donné ton contact.", "es": "{x} me pasó tu contacto.",
       "it": "Mi ha dato il tuo numero {x}.",
       "nl": "Ik kreeg je nummer van {x}.", "pt": "Foi a {x} que me passou o teu contacto.",
       "pl": "{x} dał mi twój numer.", "sv": "{x} gav mig ditt nummer.", "tr": "Numaranı {x} verdi."}


def messenger(r: random.Random, lang: str) -> Built:
    """A text or messenger message: maybe a greeted friend's name first, the writer's values in a
    sentence, signed with a first name, or introduced with a full name."""
    w, rec, x = new_people(r, lang, 3)
    parts: list[str] = []
    if r.random() < 0.6:
        parts.append(fill(r, lang, r.choice(pick_all(lang, "greet_named")), n=rec.first))
    name: str | None = None
    if r.random() < 0.35:  # introduces themselves with the full name
        shown = w.full
        parts.append(cap(fill(r, lang, pick(r, lang, r.choice(["intro", "its_me"])), w=shown)) + ".")
        name = shown
    if r.random() < 0.2:
        parts.append(fill(r, lang, VIA[lang], x=x.first if r.random() < 0.5 else x.full))
    parts.append(cap(r.choice(ASKS[lang])) if r.random() < 0.7 else make_body(r, lang, 1))
    phone, mail = r.random() < 0.75, r.random() < 0.3
    if phone:
        parts.append(fill(r, lang, pick(r, lang, "give_phone"), p=w.phone))
    if mail:
        parts.append(fill(r, lang, pick(r, lang, "give_email"), e=w.email))
    if name is None or r.random() < 0.5:
        if r.random() < 0.8:
            sign = w.first if r.random() < 0.85 else w.first.lower()
            parts.append("\n" + fill(r, lang, pick(r, lang, "sign_short"), w=sign))
            name = name or sign
    sep = r.choice([" ", " ", "\n"])
    text = sep.join(parts).replace(" \n", "\n")
    return text, label(name, w.email if mail else None, w.phone if phone else None)


STREETS = {"de": ["Hauptstraße {n}", "Bahnhofstr. {n}", "Am Markt {n}", "Industriestraße {n}a", "Lindenweg {n}"],
           "nl": ["Kerkstraat {n}", "Stationsweg {n}", "Prinsengracht {n}", "Industrieweg {n}"],
           "fr": ["{n}, rue de la République", "{n} avenue Jean Jaurès", "{n}, boulevard Voltaire"],
           "en": ["{n} Station Road", "Unit {n}, Riverside Park", "{n} King Street"],
           "it": ["Via Garibaldi {n}", "Corso Italia {n}"], "es": ["Calle Mayor {n}", "Avda. de la Paz {n}"]}
SWISS_POST = ["Zürich", "Bern", "Basel", "Luzern", "St. Gallen", "Chur", "Winterthur"]


def formal_letter(r: random.Random, lang: str) -> Built:
    """A formal letter or e-mail ending in a full signature block: name (maybe titled), position,
    company, street, town, phone and address each on a line, some without a label."""
    w, rec, boss = new_people(r, lang, 3)
    co, domain = mp.company(r, lang, (w,))
    if r.random() < 0.6:  # the address at the company's domain
        w.email = mp.email_for(r, w.first, w.last, lang, domain)
    if lang == "de" and r.random() < 0.3:  # Swiss: .ch, Swiss numbers and towns
        domain = domain.rsplit(".", 1)[0] + ".ch"
        w.email = w.email.rsplit("@", 1)[0] + "@" + domain
        w.phone = mp.phone(r, "de", 0)
        town = f"CH-{mp.lead_digits(r, 4)} {r.choice(SWISS_POST)}"
    else:
        town = mn.postcode(r, lang)
    phone, mail = r.random() < 0.8, r.random() < 0.75
    shown, name = shown_name(r, w, p_first=0.0, p_title=0.3)
    body = [make_greeting(r, lang, rec if r.random() < 0.7 else None), "", make_body(r, lang, r.randint(2, 3))]
    if r.random() < 0.4:
        body[-1] += " " + pick(r, lang, "thanks_close")
    sig = [shown]
    if r.random() < 0.75:
        sig.append(r.choice(mp.JOBS[lang]))
    sig += [co, r.choice(STREETS.get(lang, STREETS["en"])).format(n=r.randint(1, 120)), town]
    lines = labelled_contact(r, lang, w, phone, mail)
    if r.random() < 0.5:
        lines.append(f"www.{domain}")
    sig += lines
    text = "\n".join(body) + "\n\n" + pick(r, lang, "signoff") + "\n\n" + "\n".join(sig)
    if lang == "de" and r.random() < 0.3:
        text += (f"\n\nSitz der Gesellschaft: {town.split(' ', 1)[-1]} · Geschäftsführer: {boss.full} · "
                 f"{mn.ref_number(r, 'vat').replace('DE', 'HRB ')}")
    return text, label(name, w.email if mail else None, w.phone if phone else None)


THANKS_AGENT = {"en": ["Thanks {a} for getting back to me.", "Hi {a}, thanks for the quick reply.",
                       "{a}, I did what you suggested but it still fails.",
                       "As I told {a} on the phone, nothing changed."],
                "de": ["Danke {a} für die schnelle Antwort.", "Hallo {a}, leider klappt es immer noch nicht."],
                "fr": ["Merci {a} pour votre retour.", "Bonjour {a}, le problème persiste."],
                "es": ["Gracias {a} por responder.", "Hola {a}, sigue sin funcionar."],
                "it": ["Grazie {a} per la risposta.", "Ciao {a}, il problema c'è ancora."],
                "nl": ["Bedankt {a} voor je reactie.", "Hoi {a}, het werkt nog steeds niet."],
                "pt": ["Obrigado {a} pela resposta.", "Olá {a}, continua sem funcionar."]}


def ticket_thread(r: random.Random, lang: str) -> Built:
    """The customer's latest message in a support thread: the agent is greeted, named and quoted with
    their own signature and line; the contact is the customer who signs."""
    v, agent = new_people(r, lang, 2)
    lang_t = lang if lang in THANKS_AGENT else "en"
    top = [fill(r, lang_t, r.choice(THANKS_AGENT[lang_t]), a=agent.first), make_body(r, lang, 1)]
    phone = r.random() < 0.6
    if phone:
        top.append(fill(r, lang, pick(r, lang, "give_phone"), p=v.phone))
    shown, name = shown_name(r, v, p_first=0.6, p_title=0.05)
    text = " ".join(top) + "\n\n" + (pick(r, lang, "signoff") + "\n" if r.random() < 0.5 else "") + shown
    head = f"{r.choice(['Ticket', 'Case', 'Request'])} {mn.ref_number(r, 'ticket')}" if r.random() < 0.5 else ""
    if r.random() < 0.4:
        head += f"\nRequester: {v.first}"  # the first name only: the label keeps the fullest given
    text = (head.strip() + "\n\n" + text).strip()
    team = f"{agent.first.lower()}@{mp.company(r, lang)[1]}" if r.random() < 0.5 else agent.email
    desk = r.choice(["Customer Care", "Support", "Service"])
    quoted = [make_greeting(r, lang, v), make_body(r, lang, 1), pick(r, lang, "signoff"),
              f"{agent.full if r.random() < 0.5 else agent.first} | {desk}"]
    if r.random() < 0.5:
        quoted.append(pick(r, lang, "phone_label") + mp.phone(r, lang, 0))
    head_q = fill(r, lang, pick(r, lang, "wrote"), x=agent.full, xe=team)
    text += "\n\n" + head_q + "\n" + "\n".join(f"> {line}" for line in quoted)
    return text, label(name, None, v.phone if phone else None)
