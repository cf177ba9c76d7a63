"""Kinds of message other than plain e-mail: auto-replies and system notifications (no contact),
live chats, call and CRM notes, voicemail transcripts, web forms, support tickets, short texts,
social messages and cold inquiries. Same conventions as message_mail.py (see its docstring).
"""

from __future__ import annotations

import random

import message_numbers as mn
import message_parts as mp
from message_mail import (
    Built,
    contact_sentence,
    draw_fields,
    label,
    make_body,
    new_people,
    shown_name,
    signature_block,
)
from message_phrases import cap, fill, pick

COMPANY_TEAMS = ["Customer Care", "Support Team", "Service Desk", "Facilities", "IT Helpdesk", "Billing", "Events Team"]


def _co(r: random.Random, lang: str) -> str:
    return mp.company(r, lang)[0]


def _ss(r: random.Random) -> str:
    return f"{r.randint(0, 1)}:{r.randint(5, 59):02d}"


# ------------------------------------------------------------------------------- nobody to name
AUTO_SUBJECT = {"en": "Automatic reply:", "de": "Abwesenheitsnotiz:", "fr": "Réponse automatique :",
                "es": "Respuesta automática:", "it": "Risposta automatica:", "nl": "Automatisch antwoord:",
                "pt": "Resposta automática:", "pl": "Odpowiedź automatyczna:", "sv": "Automatiskt svar:",
                "tr": "Otomatik yanıt:"}
SYSTEM_ACK = {"en": [
    "This is an automated response to confirm we have received your message. Your ticket number is {ticket}. Our team "
    "usually replies within {qty} hours (Mon–Fri, {time}–{time}). Please do not reply to this email.\n\n{co} {team}",
    "Thank you for contacting {co}. Your request {ticket} has been logged and assigned to a specialist. For urgent "
    "issues call our hotline {hotline}.\n\nThis mailbox is not monitored.",
    "We've got your email! Reference: {ticket}. Average response time today: {qty} minutes.\n— {co} {team}",
], "de": [
    "Ihre Anfrage {ticket} ist bei uns eingegangen. Wir melden uns innerhalb von {qty} Werktagen. Bitte antworten Sie "
    "nicht auf diese automatisch erzeugte E-Mail.\n\n{co} Kundenservice",
], "fr": [
    "Nous avons bien reçu votre demande (réf. {ticket}). Un conseiller vous répondra sous {qty} h ouvrées. Ceci est un "
    "message automatique, merci de ne pas y répondre.",
], "es": [
    "Hemos recibido su consulta con número {ticket}. Le responderemos en un plazo de {qty} horas. Este es un mensaje "
    "automático.",
], "nl": ["Bedankt voor je bericht. We hebben je vraag ontvangen onder nummer {ticket} en reageren binnen {qty} uur."],
   "it": ["Abbiamo ricevuto la sua richiesta {ticket}. Le risponderemo entro {qty} ore. Messaggio generato "
          "automaticamente."]}


def auto_reply(r: random.Random, lang: str) -> Built:
    """An out-of-office naming a colleague to contact instead (the colleague's values are not the
    writer's), or an automated acknowledgement with nobody behind it."""
    if r.random() < 0.35:
        co = _co(r, lang)
        acks = SYSTEM_ACK.get(lang) or SYSTEM_ACK["en"]
        text = fill(r, lang, r.choice(acks), co=co, team=r.choice(COMPANY_TEAMS), hotline=mp.phone(r, lang, 0))
        return f"{r.choice(['Re: ', 'RE: ', '[Auto] ', ''])}{cap(pick(r, lang, 'topics'))}\n\n{text}", label(None)
    w, x = new_people(r, lang, 2, same_domain=True)
    text = f"{AUTO_SUBJECT[lang]} {cap(pick(r, lang, 'topics'))}\n\n" + fill(r, lang, pick(r, lang, "ooo"), x=x.full,
                                                                               xe=x.email, xp=x.phone)
    y = r.random()
    if y < 0.25:
        return text, label(None)
    if y < 0.45:
        return f"{text}\n\n{pick(r, lang, 'signoff')}\n{w.first}", label(w.first)
    phone = r.random() < 0.3
    return (f"{text}\n\n{pick(r, lang, 'signoff')}\n" + signature_block(r, lang, w, phone, False, w.full),
            label(w.full, None, w.phone if phone else None))


NOTIFY = {
    "en": [
        "Your order {order} has shipped!\n\nHi {rec},\n\nGood news — your package is on its way.\nTracking number: "
        "{tracking}\n"
        "Estimated delivery: {d}\nShip to: {street}, {postcode}\nOrder total: {price}\n\nQuestions? Visit our Help "
        "Centre.\n— The {co} team",
        "Room change: {meeting} on {d} has moved from room {room} to room {room}. Start time unchanged: {time}. "
        "Coffee will be served on floor {qty}.\n— Facilities",
        "Password reset requested\n\nSomeone asked to reset the password for the account {acct_email}. Enter code "
        "{code} "
        "or use the link below. The link expires in 30 minutes. If this wasn't you, you can ignore this email.\n\n{co} "
        "Security",
        "Invitation: {meeting} @ {wd} {d} {time} – {time} (CET)\n\nJoin with Google Meet: meet.google.com/{meet}\n"
        "Join by phone: {hotline} PIN: {code}#\nGuests: {guest1}, {guest2}\nView all guest info\n\nInvitation from "
        "Google Calendar",
        "{co} Monthly — {topic_cap} edition\n\nIn this issue: what's new, a customer story and {qty}% off everything "
        "with code SPRING{qty}.\nYou are receiving this because you subscribed with {acct_email}. Unsubscribe | "
        "Preferences\n"
        "{co}, {street}, {postcode}",
        "Your invoice {invoice} for {price} is now available. Due date: {d}. Customer number: {account}. The amount "
        "will be collected by direct debit from {iban}.",
        "We tried to deliver your parcel {tracking} today at {time}. It is now at your local pickup point ({street}, "
        "{postcode}). Pickup code: {code}. Opening hours Mon–Sat 9–18.",
        "Your verification code is {code}. It expires in 10 minutes. Never share this code with anyone.",
        "[{repo}] Run failed: build #{qty} on main\nJob 'test' failed with exit code 1 (error {error}) at {time}.\n"
        "View the logs to see what went wrong. You are receiving this because you watch this repository.",
        "Reminder: you have an appointment with Dr. {doc} on {d} at {time}, room {room}. To cancel or reschedule call "
        "{hotline} at least 24 hours in advance. Reply STOP to opt out.",
        "New sign-in to your account\n\nWe noticed a new sign-in on {d} at {time} from Chrome on Windows (IP "
        "{ip}). If this was you, no action is needed. Otherwise reset your password.",
        "Payment received — thank you! We've received {price} for invoice {invoice} on {d}. Reference: {order}.",
        "Check-in is now open for flight {flight} on {d}. Departure {time}, gate {room}, seat {qty}C. Booking "
        "reference "
        "{pnr}.",
        "Your {co} Pro plan renews on {d} for {price}. The card ending {last4} will be charged. Manage your "
        "subscription "
        "in your account settings.",
        "Parking session started for {plate} in zone {code}. Ends at {time}. Total so far: {price}.",
        "Your table for {qty} at {co} is confirmed for {d} at {time}. Booking ref {pnr}. Need to change it? Reply to "
        "this "
        "message or call {hotline}.",
    ],
    "de": ["Ihre Bestellung {order} wurde versandt. Sendungsnummer: {tracking}. Voraussichtliche Zustellung: {d}.\n\n"
           "Ihr {co} Team",
           "Raumänderung: Das Meeting „{meeting}“ am {d} um {time} findet in Raum {room} statt (nicht {room}).",
           "Ihr Bestätigungscode lautet {code}. Er ist 10 Minuten gültig.",
           "Ihre Rechnung {invoice} über {price} steht zum Download bereit. Kundennummer: {account}. Fällig am {d}."],
    "fr": ["Votre commande {order} a été expédiée. Numéro de suivi : {tracking}. Livraison prévue le {d}.",
           "Changement de salle : la réunion du {d} à {time} aura lieu en salle {room}.",
           "Votre code de vérification est {code}. Il expire dans 10 minutes."],
    "es": ["Tu pedido {order} ha sido enviado. Número de seguimiento: {tracking}. Entrega estimada: {d}.",
           "Recordatorio: tiene una cita el {d} a las {time} en la consulta {room}. Para anular llame al {hotline}."],
    "it": ["Il tuo ordine {order} è stato spedito. Codice di tracciamento: {tracking}. Consegna prevista: {d}."],
    "nl": ["Je pakket {tracking} wordt {d} tussen {time} en {time} bezorgd. Niet thuis? Kies een ander moment in "
           "de app.",
           "Zaalwijziging: de vergadering van {d} om {time} is verplaatst naar zaal {room}."],
    "pt": ["A sua encomenda {order} foi enviada. Código de seguimento: {tracking}. Entrega prevista: {d}."],
    "pl": ["Twoja paczka {tracking} jest w drodze. Kod odbioru: {code}. Paczkomat: {street}, {postcode}."],
    "sv": ["Ditt paket {tracking} levereras {d}. Uthämtningskod: {code}."],
    "tr": ["{order} numaralı siparişiniz kargoya verildi. Takip numarası: {tracking}. Tahmini teslimat: {d}."],
}
MEETINGS = ["Weekly sync", "Q3 planning", "Budget review", "Design crit", "All hands", "1:1", "Sprint retro",
            "Board prep", "Kick-off", "Vendor demo"]
STREETS = ["12 High Street", "Kastanienallee 41", "27 rue des Lilas", "Calle Mayor 8", "Via Roma 15", "Dorpsstraat 3",
           "Rua Augusta 120", "ul. Długa 5", "Storgatan 9", "Atatürk Cad. 22", "400 Market St",
           "Unit 4, Riverside Park"]


def notification(r: random.Random, lang: str) -> Built:
    """A system notification: numbers of every kind, maybe people's names or addresses, no writer."""
    a, b, c = new_people(r, lang, 3)
    text = fill(r, lang, r.choice(NOTIFY[lang]), rec=a.first, co=_co(r, lang), street=r.choice(STREETS),
                meeting=r.choice(MEETINGS), acct_email=a.email, guest1=b.email, guest2=c.email,
                hotline=mp.phone(r, lang, 0),
                wd=r.choice(mn.WEEKDAYS["en"].split()), meet=f"{mp.ascii_fold(b.last)[:3]}-{mp.digits(r, 4)}-xyz",
                doc=c.last, ip=f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                repo=f"{mp.ascii_fold(a.last)}/{r.choice(['api', 'web', 'infra', 'etl'])}", last4=mp.digits(r, 4),
                pnr="".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
                plate=f"{r.choice(['B', 'M', 'HH', 'AB', 'LD'])}-{r.choice('ABCDEFGH')}{r.choice('KLMNPRST')} "
                      f"{mp.digits(r, 3)}",
                topic_cap=cap(r.choice(mn.MONTHS["en"].split())))
    return text, label(None)


# ----------------------------------------------------------------------------- chats and notes
def chat(r: random.Random, lang: str) -> Built:
    """A live chat with an agent: the visitor is the contact, the agent is not."""
    v, agent = new_people(r, lang, 2)
    who = r.choice([("Visitor", f"Agent ({agent.first})"), ("Customer", agent.first),
                    ("You", f"{agent.first} (Support)"),
                    ("Guest", f"{agent.first} {agent.last[0]}.")])
    hello = {"en": "Hello! What can I do for you today?", "de": "Hallo! Wie kann ich helfen?",
             "fr": "Bonjour ! Comment puis-je vous aider ?",
             "es": "¡Hola! ¿En qué puedo ayudarte?", "nl": "Hallo! Waarmee kan ik je helpen?"}[lang]
    problem = {"en": ["ordered a {thing} {qty} days ago, no tracking info yet",
                      "my invoice {invoice} is wrong, I was charged {price} twice",
                      "the app keeps showing error {error}", "I need to change the delivery address for order {order}"],
               "de": ["meine Bestellung {order} ist noch nicht da", "ich wurde doppelt belastet ({price})"],
               "fr": ["ma commande {order} n'est pas arrivée", "j'ai été débité deux fois ({price})"],
               "es": ["mi pedido {order} no ha llegado", "me cobraron dos veces {price}"],
               "nl": ["mijn bestelling {order} is nog niet binnen", "ik ben twee keer afgeschreven ({price})"]}[lang]
    if r.random() < 0.4:  # a problem without numbers
        problem = {"en": ["my parcel never arrived", "I can't log in to my account", "I was charged twice"],
                   "de": ["mein Paket ist nie angekommen"], "fr": ["mon colis n'est jamais arrivé"],
                   "es": ["mi paquete nunca llegó"], "nl": ["mijn pakket is nooit aangekomen"]}[lang]
    ask = {"en": "Sorry to hear that! What's your name and the email you ordered with?",
           "de": "Das tut mir leid! Wie ist Ihr Name?",
           "fr": "Désolé ! Pouvez-vous me donner votre nom ?", "es": "¡Lo siento! ¿Me das tu nombre y correo?",
           "nl": "Vervelend! Mag ik je naam en e-mailadres?"}[lang]
    lines = [r.choice([f"Live chat — visitor #{mp.digits(r, 4)}", f"Chat transcript {mn.date(r, 'en')}",
                       f"[Chat started {mn.time_(r, 'en')}]", f"Conversation #{mp.digits(r, 6)}", "Live chat",
                       "Chat transcript", "Website chat"])]
    lines += [f"{who[1]}: {hello}", f"{who[0]}: " + fill(r, lang, r.choice(problem), thing=r.choice(["standing desk",
                                                                                                     "sofa", "bike",
                                                                                                     "printer"]))]
    lines.append(f"{who[1]}: {ask}")
    x = r.random()
    if x < 0.15:  # the visitor leaves without giving anything
        lines.append(f"{who[0]}: " + r.choice(["nvm, I'll call later", "never mind, found it", "ok thx bye"]))
        return "\n".join(lines), label(None)
    phone, mail = draw_fields(r, 0.6, 0.7)
    name = v.full if r.random() < 0.7 else v.first
    if r.random() < 0.1:
        name = name.lower()
    given = [name] + ([v.email] if mail else [])
    lines.append(f"{who[0]}: " + ", ".join(given))
    if phone:
        lines.append(f"{who[0]}: " + r.choice([f"order no. {mn.ref_number(r, 'order')}, and the driver can call "
                                               f"{v.phone}",
                                               f"my number is {v.phone}", f"you can call me on {v.phone}"]))
    thanks = {"en": "Thanks {n}, checking now...", "de": "Danke, {n}, ich schaue nach.", "fr": "Merci {n}, je regarde.",
              "es": "Gracias, {n}, lo reviso.", "nl": "Dank je, {n}, ik kijk even."}[lang]
    lines.append(f"{who[1]}: " + thanks.format(n=v.first))
    if r.random() < 0.3:
        lines.append(f"{who[1]}: You can also reach us on {mp.phone(r, lang, 0)} or "
                     f"{agent.first.lower()}@{mp.company(r, lang)[1]}.")
    return "\n".join(lines), label(name, v.email if mail else None, v.phone if phone else None)


def call_note(r: random.Random, lang: str) -> Built:
    """A call or CRM note: the person spoken with is the contact, not the note's author."""
    v, a = new_people(r, lang, 2)
    phone, mail = draw_fields(r, 0.75, 0.55)
    titled = r.random() < 0.35
    t, who = v.titled(r, surname_only=r.random() < 0.15)
    shown, name = (f"{t} {who}", who) if titled else (v.full, v.full)
    co, job = _co(r, lang), r.choice(mp.JOBS["en" if lang == "en" else lang])
    author = r.choice([f"{a.first} {a.last[0]}.", a.first, a.full])
    if lang == "de":
        text = (f"Telefonnotiz {mn.date(r, lang)}: Rückruf von {shown} ({co}). Wünscht ein Angebot für "
                f"{pick(r, lang, 'topics')}"
                + (f", Tel. {v.phone}" if phone else "") + (f", Mail: {v.email}" if mail else "")
                + f". — erfasst von {author}")
    elif lang == "fr":
        text = (f"Compte rendu d'appel du {mn.date(r, lang)} : échange avec {shown}, {job} chez {co}."
                + (f" Tél : {v.phone}." if phone else "") + (f" Courriel : {v.email}." if mail else "")
                + f" À rappeler après le {mn.date(r, lang)}. Suivi : {author}")
    elif r.random() < 0.5:
        bits = [f"Call notes {mn.date(r, lang)} — spoke with {shown} ({job}, {co}).",
                fill(r, lang, r.choice(["Keen on the larger plan, budget signed off for Q{qty}.",
                                        "Wants {t} before the next call.",
                                         "Asked about pricing for {qty} seats.",
                                         "Complained about invoice {invoice}."]))]
        if mail:
            bits.append(r.choice([f"Send the whitepaper to {v.email}.", f"Email: {v.email}."]))
        if phone:
            bits.append(r.choice([f"Direct line: {v.phone}.", f"Mobile {v.phone}.", f"Tel: {v.phone}."]))
        bits.append(f"Call again {r.choice(['Tues.', 'next week', 'after the trade fair', mn.date(r, lang)])} — "
                    + r.choice([f"logged by {author}", f"Owner: {author}", f"(Entered by: {author})"]))
        text = " ".join(bits)
    else:
        rows = [f"Lead: {shown}", f"Company: {co}",
                f"Source: {r.choice(['Trade show', 'Referral', 'Webinar', 'Website'])}"]
        if mail:
            rows.append(f"Email: {v.email}")
        if phone:
            rows.append(f"{r.choice(['Phone', 'Mobile', 'Landline'])}: {v.phone}")
        rows.append(f"Assigned to: {a.full} ({a.email})" if r.random() < 0.5 else f"Owner: {author}")
        rows.append("Notes: " + fill(r, lang, r.choice(["Runs {qty} sites, wants a demo on {d}.",
                                                        "Budget ~{price}. Call back after {d}.",
                                                        "Prefers post to email."])))
        text = "\n".join(rows)
    return text, label(name, v.email if mail else None, v.phone if phone else None)


def voicemail(r: random.Random, lang: str) -> Built:
    """A voicemail transcript: the caller is the contact."""
    v = new_people(r, lang, 1)[0]
    # headers full of durations and times that are not phones (issue 17b: "0:38" returned as the phone)
    head = r.choice([f"Voicemail transcript (received {mn.time_(r, 'en')}):", f"[Voicemail – {_ss(r)}]",
                     "Transcription:", f"[Voicemail · {_ss(r)}]", f"Voicemail ({_ss(r)}, {mn.time_(r, 'en')})",
                     f"New voicemail ({_ss(r)}) —", f"Mailbox message {mn.date(r, 'en')} {mn.time_(r, 'en')}:",
                     f"Duration: {_ss(r)}\nReceived: {mn.date(r, 'en')} {mn.time_(r, 'en')}\n",
                     f"🎙 Voice message · {_ss(r)}", f"Visual Voicemail — {mn.time_(r, 'en')} ({_ss(r)})"])
    x = r.random()
    if x < 0.12:
        who, name = None, None
    elif x < 0.35:
        who, name = v.first, v.first
    elif x < 0.45:
        t, s = v.titled(r, surname_only=True)
        who, name = f"{t} {s}", s
    else:
        who, name = v.full, v.full
    phone = r.random() < 0.75
    if lang == "en":
        um = r.choice(["", "um, ", "uh, "])
        intro = f"Hi, {um}this is {who} calling from {_co(r, lang)}" if who else f"Hi, it's me, {um}just calling back"
        text = f"{head} {intro} about {pick(r, lang, 'topics')}. " + fill(r, lang, r.choice(
            ["There's a small issue with invoice {invoice} I'd like to go over.", "We can get you in on {d} at {time}.",
             "The delivery is booked for {d}.", "The quote comes to {price}."]))
        if phone:
            text += " " + r.choice([f"Call me back at {v.phone}.", f"My mobile's {v.phone}, call back whenever.",
                                    f"Please ring me back on {v.phone}. Again, {v.phone}."])
        text += r.choice([" Thanks, bye.", " Thank you.", " Cheers.", ""])
    else:
        intro = fill(r, lang, pick(r, lang, "intro"), w=who) if who else {"de": "ich bins nochmal", "fr": "c'est moi",
                                                                         "es": "soy yo", "it": "sono io",
                                                                         "nl": "ik ben het"}[lang]
        text = f"{head} {cap(pick(r, lang, 'greet_generic'))} {intro}. {make_body(r, lang, 1)}"
        if phone:
            text += " " + fill(r, lang, pick(r, lang, "give_phone"), p=v.phone)
    return text.replace("  ", " "), label(name, None, v.phone if phone else None)


FORM_LABELS = {"en": ("Name", "Email", "Phone", "Company", "Message"), "de": ("Name", "E-Mail", "Telefon", "Firma",
                                                                              "Nachricht"),
               "fr": ("Nom", "E-mail", "Téléphone", "Société", "Message"), "es": ("Nombre", "Correo", "Teléfono",
                                                                                  "Empresa", "Mensaje"),
               "it": ("Nome", "Email", "Telefono", "Azienda", "Messaggio"), "nl": ("Naam", "E-mail", "Telefoon",
                                                                                   "Bedrijf", "Bericht"),
               "pt": ("Nome", "Email", "Telefone", "Empresa", "Mensagem"), "pl": ("Imię i nazwisko", "E-mail",
                                                                                  "Telefon", "Firma", "Wiadomość"),
               "sv": ("Namn", "E-post", "Telefon", "Företag", "Meddelande"), "tr": ("Ad Soyad", "E-posta", "Telefon",
                                                                                    "Şirket", "Mesaj")}
FORM_TITLES = {"en": ["New contact form submission", "Website enquiry (Contact Us)", "Form: Callback request",
                      "New lead from {co}.com", "Contact form: Get a quote", "[{co}.com] New message"],
               "de": ["Neue Kontaktanfrage", "Kontaktformular: Rückrufbitte"],
               "fr": ["Nouveau message depuis le formulaire de contact"],
               "es": ["Nuevo mensaje del formulario web"], "nl": ["Formulier ingevuld: Offerte aanvragen"],
               "it": ["Nuovo messaggio dal modulo contatti"], "pt": ["Nova mensagem do formulário de contacto"],
               "pl": ["Nowa wiadomość z formularza kontaktowego"], "sv": ["Nytt meddelande från kontaktformuläret"],
               "tr": ["İletişim formundan yeni mesaj"]}


def web_form(r: random.Random, lang: str) -> Built:
    """A web form submission: fields as the submitter typed them (casing kept), some left empty."""
    v, x = new_people(r, lang, 2)
    labels = list(FORM_LABELS[lang] if r.random() < 0.7 else FORM_LABELS["en"])
    if r.random() < 0.3:
        labels = [s.upper() for s in labels]
    if r.random() < 0.25:
        labels[0] = {"en": "Full name", "de": "Ihr Name"}.get(lang, labels[0])
    name = v.full
    style = r.random()
    if style < 0.1:
        name = name.upper()
    elif style < 0.18:
        name = name.lower()
    elif style < 0.24:
        name = f"{v.first.upper()} {v.last.lower()}"
    mail = v.email.upper() if r.random() < 0.05 else v.email
    phone = r.random() < 0.75
    rows = [f"{labels[0]}: {name}", f"{labels[1]}: {mail}"]
    rows.append(f"{labels[2]}: {v.phone}" if phone else r.choice([f"{labels[2]}:", f"{labels[2]}: -",
                                                                  f"{labels[2]}: n/a", None]))
    if r.random() < 0.6:
        rows.append(f"{labels[3]}: {_co(r, lang)}")
    if r.random() < 0.3:
        rows.append(r.choice([f"Preferred time: weekdays {mn.time_(r, 'en')}–{mn.time_(r, 'en')}",
                              f"Budget: {mn.price(r, lang)}",
                              f"Order number: {mn.ref_number(r, 'order')}", f"Postcode: {mn.postcode(r, lang)}"]))
    msg = make_body(r, lang, 1)
    if r.random() < 0.2:
        msg += " " + fill(r, lang, pick(r, lang, "loop_in"), x=x.full, xe=x.email, xp=x.phone)
    rows.append(f"{labels[4]}: {msg}")
    rows = [row for row in rows if row]
    sep = r.choice(["\n-----------------------------\n", "\n", "\n\n", "\n=====\n"])
    titles = FORM_TITLES["en"] if labels[1] in ("Email", "EMAIL") or r.random() < 0.3 else FORM_TITLES[lang]
    title = r.choice(titles).format(co=mp.ascii_fold(_co(r, "en")))
    return title + sep + "\n".join(rows), label(name, mail, v.phone if phone else None)


def ticket(r: random.Random, lang: str) -> Built:
    """A support ticket: the requester's address in the header, their name in the signature, the agent's too."""
    v, agent = new_people(r, lang, 2)
    phone = r.random() < 0.6
    subject = cap(r.choice(["PDF export broken since the last release", "Login fails after update",
                            "Wrong amount on invoice", "URGENT - terminals offline", "Refund not received",
                            "Sync stopped working"]))
    problem = make_body(r, lang, r.randint(1, 2))
    shown, name = shown_name(r, v, p_first=0.15, p_title=0.1)
    sig = shown + (f"\n{_co(r, lang)}" if r.random() < 0.5 else "") + (f"\nTel: {v.phone}" if phone else "")
    if r.random() < 0.5:
        head = f"Ticket {mn.ref_number(r, 'ticket')}\nFrom: {v.email}\nSubject: {subject}"
        text = f"{head}\n\n{pick(r, lang, 'greet_generic')}\n{problem}\n\n{sig}"
    else:
        head = (f"[{_co(r, 'en')} Support] Re: {subject} ({mn.ref_number(r, 'ticket')})\nRequester: {v.full} "
                f"<{v.email}>\n"
                f"Assignee: {agent.full}\nStatus: {r.choice(['Open', 'Pending', 'New'])}\nPriority: "
                f"{r.choice(['High', 'Normal', 'Urgent'])}")
        text = f"{head}\n\n{problem}\n\n{sig}"
        name = v.full
    return text, label(name, v.email, v.phone if phone else None)


# --------------------------------------------------------------------------------- short and social
def short_text(r: random.Random, lang: str) -> Built:
    """A one-line text or chat message, signed with a first name at most."""
    v = new_people(r, lang, 1)[0]
    name = v.first if r.random() < 0.75 else v.first.lower()
    body = pick(r, lang, "short")
    x = r.random()
    if x < 0.2:
        return body + r.choice(["", "!", " 👍", " :)"]), label(None)
    if x < 0.45:
        return body + " " + fill(r, lang, pick(r, lang, "sign_short"), w=name), label(name)
    if x < 0.55 and lang == "en":
        t, s = v.titled(r, surname_only=True)
        return f"Hello this is {t} {s} from {r.randint(2, 40)}{r.choice('ABCD')}, {body}.", label(s)
    opener = fill(r, lang, pick(r, lang, "its_me"), w=name)
    y = r.random()
    if y < 0.2:
        return f"{opener}, {body}", label(name)
    if y < 0.75:  # the number is often the only one in the text
        said = (r.choice([f"my new number is {v.phone}", f"this is my number: {v.phone}", f"{v.phone} if u need me"])
                if lang == "en" or r.random() < 0.3 else fill(r, lang, pick(r, lang, "give_phone"), p=v.phone))
        return f"{opener}, {body}. {said}", label(name, None, v.phone)
    return f"{opener}, {body}. also can u send it to {v.email}", label(name, v.email)


EVENTS = ["the hackathon", "DevDays", "the pottery class", "the school fair", "the climbing gym", "the LogiTech summit",
          "the book club", "the Saturday market", "the design meetup", "the charity run"]


def social(r: random.Random, lang: str) -> Built:
    """A casual or networking message, often naming a friend who is not the writer."""
    w, friend, rec = new_people(r, "en", 3)
    phone, mail = draw_fields(r, 0.5, 0.6)
    shown = w.full if r.random() < 0.7 else w.first
    tpl = r.choice([
        "Hey {n}!\n\nGreat meeting you at {ev} last weekend. My friend {x} ({xe}) worked on something like this and "
        "would like to connect as well.",
        "Thanks for connecting, {n}! Shout if you ever want help with {t} — happy to help.",
        "Hi {n} — I came across your talk at {ev} and really enjoyed it. No pressure at all, but I'd be "
        "happy to set up a short video call.",
        "Hey {n}, loved your post about {t}! We're hosting a meetup on {d} at {time}, tickets are {price}. {x} is "
        "speaking too.",
    ])
    text = fill(r, "en", tpl, n=rec.first, ev=r.choice(EVENTS), x=friend.full, xe=friend.email)
    contact = contact_sentence(r, "en", w, phone, mail)
    text += (" " + contact if contact else "") + r.choice(["\n\n— ", " Cheers, ", "\n\n", " - "]) + shown
    return text, label(shown, w.email if mail else None, w.phone if phone else None)


def inquiry(r: random.Random, lang: str) -> Built:
    """A cold inquiry that introduces its writer in the first line, in the writer's language."""
    w = new_people(r, lang, 1)[0]
    phone, mail = draw_fields(r, 0.75, 0.5)
    shown, name = shown_name(r, w, p_first=0.15, p_title=0.2)
    opener = cap(fill(r, lang, pick(r, lang, "intro"), w=shown))
    text = f"{pick(r, lang, 'greet_generic')}\n\n{opener}. {make_body(r, lang, r.randint(1, 2))}"
    contact = contact_sentence(r, lang, w, phone, mail)
    text += (" " + contact if contact else "") + (" " + pick(r, lang, "thanks_close") if r.random() < 0.5 else "")
    return text.strip(), label(name, w.email if mail else None, w.phone if phone else None)
