"""The nouns of the demo's messages: people, phone numbers, e-mail addresses and companies (the numbers
that are *not* phones are in message_numbers.py). make_inputs.py and edge_cases.py compose messages
from these; message_phrases.py holds the sentences around them.

Every generator takes a ``random.Random`` so a seed fixes the output. Pools are large on purpose:
~700 names over ten languages, thousands of company names, a dozen phone formats per country (message_phones.py), so an
adapter learns where a value sits in a message, not which values the generator likes.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass

from message_phones import digits as digits  # re-exported: the other modules take numbers from here
from message_phones import lead_digits as lead_digits
from message_phones import phone

LANGS = ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "tr")

# first names by gender (for gendered honorifics and greetings), and surnames, per language
NAMES: dict[str, dict[str, list[str]]] = {
    "en": {
        "f": ["Olivia", "Emma", "Charlotte", "Amelia", "Harper", "Evelyn", "Abigail", "Ella", "Scarlett", "Madison",
              "Lily", "Rosalind", "Nora", "Hazel", "Violet", "Aurora", "Savannah", "Brooklyn", "Leah", "Stella",
              "Maeve", "Imogen", "Poppy", "Freya", "Orla", "Keira", "Jasmine", "Tegan", "Bethany", "Courtney",
              "Deirdre", "Gemma", "Rhiannon", "Siân", "Kayla", "Trinity", "Mackenzie", "Marguerite", "Destiny",
              "Yolanda", "Shannon", "Lorna", "Marnie", "Tilly", "Harriet", "Philippa", "Wren", "Juniper"],
        "m": ["Liam", "Noah", "Oliver", "Elijah", "James", "William", "Benjamin", "Lucas", "Henry", "Theodore",
              "Jack", "Levi", "Alexander", "Jackson", "Mason", "Ethan", "Logan", "Alistair", "Carter", "Wyatt",
              "Finn", "Rory", "Cian", "Declan", "Ewan", "Fraser", "Hamish", "Lachlan", "Tyler", "Brandon", "Darnell",
              "Jamal", "Trevor", "Dwight", "Clive", "Nigel", "Rupert", "Gareth", "Rhys", "Dylan", "Cody", "Travis",
              "Mitchell", "Bryce", "Curtis", "Seamus", "Barnaby", "Ezra"],
        "last": ["Whitfield", "Harrington", "O'Donnell", "McAllister", "Pemberton", "Ashcroft", "Fairbanks", "Goldberg",
                 "Castellano", "Nakashima", "Oyelaran", "Featherstone", "Blackwood", "Langley-Hughes", "Prescott",
                 "Quigley", "Rutherford", "Sheridan", "Thistlewood", "Underhill", "Vance", "Winslow", "Yardley",
                 "Abernethy", "Barraclough", "Cavanagh", "Drummond", "Ellison", "Fitzgerald", "Gallagher", "Hollis",
                 "Ingram", "Jennings", "Kershaw", "Lockhart", "Mahoney", "Northcott", "Ogunleye", "Pryce-Jones",
                 "Radcliffe", "Stokes", "Tremaine", "Upton", "Villiers", "Wakefield", "Ashworth-Bell", "D'Souza",
                 "MacIntyre", "O'Rourke", "St. John", "Van Buren", "De Souza", "Okonjo", "Banerjee", "Chaudhary"],
    },
    "de": {
        "f": ["Annika", "Birgit", "Carina", "Dörte", "Elke", "Friederike", "Gesine", "Heike", "Ilka", "Jutta",
              "Katrin", "Leonie", "Mareike", "Nadine", "Ortrud", "Svenja", "Theresa", "Ulrike", "Wiebke", "Hannelore",
              "Anne-Kathrin", "Mia-Sophie", "Gudrun", "Liesel", "Käthe", "Franziska"],
        "m": ["Andreas", "Bernd", "Christoph", "Detlef", "Eckhard", "Florian", "Gerhard", "Hendrik", "Ingo", "Jens",
              "Klaus-Peter", "Lutz", "Matthias", "Niklas", "Ottmar", "Rüdiger", "Sönke", "Thorsten", "Uwe", "Volker",
              "Wolfgang", "Jörn", "Malte", "Benedikt", "Till", "Ansgar"],
        "last": ["Hoffmeister", "Brückner", "Schäfer", "Köhler", "Großmann", "Lehmann", "Zimmermann", "Wagner-Stolz",
                 "Krüger", "Hartmann", "von Ahlen", "Pfeiffer", "Vogelsang", "Oberhuber", "Steinbrück", "Weißhaupt",
                 "Dreßler", "Kühne", "Löffler", "Sauerbrey", "zu Dohna", "Bachmann", "Eichhorn", "Gärtner",
                 "Heßler", "Jäger", "Kessler-Frey", "Mößner", "Nüßlein", "Rößler"],
    },
    "fr": {
        "f": ["Aurélie", "Bénédicte", "Céline", "Delphine", "Églantine", "Florence", "Gaëlle", "Hélène", "Inès",
              "Joséphine", "Laetitia", "Maëlle", "Noémie", "Océane", "Pascale", "Solène", "Typhaine", "Valérie",
              "Marie-Claude", "Anne-Sophie", "Clémence", "Mathilde", "Ségolène", "Agnès"],
        "m": ["Arnaud", "Benoît", "Cédric", "Damien", "Étienne", "Fabrice", "Grégoire", "Hervé", "Jérôme", "Loïc",
              "Mathis", "Nicolas", "Olivier", "Pierre-Yves", "Quentin", "Rémi", "Sébastien", "Thibault", "Yannick",
              "Jean-Baptiste", "Gaëtan", "Timothée", "Anatole", "Bastien"],
        "last": ["Beaumont", "Chevalier", "Delacroix", "Fontaine", "Girard", "Lacroix-Martin", "Mercier", "Perrin",
                 "Rousseau", "Vasseur", "de la Fontaine", "Le Goff", "Lemaître", "Château", "Bérenger", "Dufresne",
                 "d'Aubigny", "Guérin", "Hébert", "Joubert", "Lefebvre-Roy", "Péguy", "Rivière", "Thévenet"],
    },
    "es": {
        "f": ["Alba", "Begoña", "Consuelo", "Dolores", "Esperanza", "Fernanda", "Guadalupe", "Inmaculada", "Julieta",
              "Lourdes", "Macarena", "Nieves", "Pilar", "Rocío", "Soledad", "Valentina", "María José", "Ainhoa",
              "Itziar", "Montserrat", "Catalina", "Renata"],
        "m": ["Álvaro", "Borja", "César", "Diego", "Eusebio", "Fermín", "Gonzalo", "Hugo", "Ignacio", "Joaquín",
              "Leandro", "Mauricio", "Nicolás", "Óscar", "Pablo", "Rodrigo", "Sergio", "Txema", "Juan Carlos",
              "Agustín", "Emiliano", "Ramiro"],
        "last": ["Aguirre", "Belmonte", "Cabrera", "Domínguez", "Echeverría", "Fuentes", "Guzmán", "Iglesias",
                 "Jiménez-Prieto", "Lozano", "Medina", "Navarro", "Ordóñez", "Peña", "Quiroga", "Salazar", "Téllez",
                 "Urrutia", "Villalobos", "de la Vega", "Zubizarreta", "Núñez", "Ibáñez", "Muñoz del Río"],
    },
    "it": {
        "f": ["Alessandra", "Benedetta", "Caterina", "Donatella", "Eleonora", "Francesca", "Gaia", "Ilaria",
              "Ludovica", "Marta", "Noemi", "Ornella", "Raffaella", "Serena", "Vittoria", "Annalisa", "Chiara",
              "Rossella"],
        "m": ["Alessio", "Bruno", "Cesare", "Davide", "Emanuele", "Fabrizio", "Gianluca", "Jacopo", "Leonardo",
              "Massimo", "Niccolò", "Pierluigi", "Riccardo", "Salvatore", "Tommaso", "Vittorio", "Gianmarco", "Ettore"],
        "last": ["Abbate", "Barbieri", "Colombo", "De Luca", "Esposito", "Ferrara", "Galli", "Lombardi", "Mancini",
                 "Marchetti", "Pellegrini", "Rinaldi", "Santoro", "Testa", "Vitale", "Dell'Acqua", "Lo Russo",
                 "Di Stefano", "Sant'Angelo", "Zanetti"],
    },
    "nl": {
        "f": ["Anouk", "Bregje", "Daphne", "Eline", "Fleur", "Gerda", "Hanneke", "Ilse", "Janneke", "Liesbeth",
              "Marloes", "Noortje", "Roos", "Sietske", "Tessa", "Wilhelmina", "Marieke", "Jolien"],
        "m": ["Arjen", "Bas", "Coen", "Dirk-Jan", "Evert", "Frits", "Gijs", "Hidde", "Joost", "Koen", "Luuk",
              "Maarten", "Niels", "Ruud", "Sjoerd", "Thijs", "Wouter", "Jeroen"],
        "last": ["van der Meulen", "de Jong", "Bakker", "Visser", "Smit", "Mulder", "van Dijk", "de Boer",
                 "Vermeulen", "van den Heuvel", "Kuipers", "Dekker", "Brouwer", "van Leeuwen", "'t Hart",
                 "Verhoeven", "de Wit", "Hendriks", "Schouten", "van 't Zand"],
    },
    "pt": {
        "f": ["Adriana", "Bianca", "Conceição", "Daniela", "Fabiana", "Gabriela", "Helena", "Joana", "Larissa",
              "Mariana", "Natália", "Patrícia", "Raquel", "Tatiana", "Vitória", "Ana Luísa", "Inês", "Letícia"],
        "m": ["André", "Bernardo", "Caio", "Diogo", "Emanuel", "Fábio", "Gustavo", "Henrique", "Igor", "Leonardo",
              "Marcelo", "Nuno", "Otávio", "Rodrigo", "Sérgio", "Tiago", "Rui", "Vasco"],
        "last": ["Almeida", "Barbosa", "Cardoso", "Duarte", "Esteves", "Fonseca", "Gonçalves", "Lopes", "Magalhães",
                 "Moreira", "Pacheco", "Queiroz", "Rebelo", "Sampaio", "Teixeira", "da Costa", "dos Santos",
                 "Araújo", "Brandão", "Simões"],
    },
    "pl": {
        "f": ["Agnieszka", "Barbara", "Dorota", "Ewa", "Grażyna", "Halina", "Iwona", "Joanna", "Katarzyna",
              "Magdalena", "Małgorzata", "Natalia", "Urszula", "Weronika", "Zofia", "Aleksandra"],
        "m": ["Adam", "Bartosz", "Dariusz", "Grzegorz", "Jarosław", "Krzysztof", "Maciej", "Marek", "Paweł", "Piotr",
              "Radosław", "Sławomir", "Wojciech", "Zbigniew", "Michał", "Jędrzej"],
        "last": ["Zieliński", "Wiśniewska", "Wójcik", "Kamińska", "Lewandowski", "Dąbrowska", "Szymański",
                 "Woźniak", "Kozłowski", "Jankowska", "Mazur", "Krawczyk", "Grabowski", "Pawłowska",
                 "Michalski", "Król", "Wieczorek", "Jabłoński", "Nowicka-Sobczak", "Zając"],
    },
    "sv": {
        "f": ["Annika", "Birgitta", "Elin", "Frida", "Greta", "Hanna", "Ida", "Karin", "Linnéa", "Maja", "Sigrid",
              "Tove", "Ulla", "Ebba", "Alva", "Agnes"],
        "m": ["Anders", "Björn", "Emil", "Fredrik", "Gustav", "Henrik", "Jonas-Erik", "Kalle", "Lars", "Magnus",
              "Nils", "Oskar", "Per", "Stefan", "Viktor", "Axel"],
        "last": ["Bergström", "Ekström", "Forsberg", "Gustafsson", "Hedlund", "Holmqvist", "Isaksson", "Jonsson",
                 "Karlsson", "Lundgren", "Nordin", "Öberg", "Sandberg", "Sjöberg", "Wallin", "Åkesson", "Ljungqvist",
                 "af Klercker", "Östlund", "Strand"],
    },
    "tr": {
        "f": ["Ayşe", "Burcu", "Çiğdem", "Derya", "Ebru", "Fatma", "Gülşen", "Hülya", "İpek", "Merve", "Nazlı",
              "Özlem", "Pınar", "Selin", "Tuğba", "Zeynep"],
        "m": ["Ahmet", "Barış", "Cem", "Emre", "Furkan", "Hakan", "İbrahim", "Kerem", "Murat", "Oğuz", "Serkan",
              "Tolga", "Umut", "Volkan", "Yiğit", "Çağlar"],
        "last": ["Aydın", "Çelik", "Demir", "Erdoğan", "Güneş", "Kaya", "Koç", "Kurt", "Öztürk", "Polat", "Şahin",
                 "Tekin", "Uçar", "Yıldız", "Arslan", "Doğan", "Karaca", "Özdemir", "Bulut", "Akgül"],
    },
}

# Names with particles, apostrophes, hyphens and two given names (issue 17b: the adapter dropped the
# surname or the particle, or rebuilt the address from such names).
MORE_NAMES = {
    "en": {"f": ["Mary-Kate", "Anna-Louise", "Sarah Jane", "Lily-Rose"], "m": ["John Paul", "Jean-Luc", "Billy-Ray"],
           "last": ["MacLeod", "McAuley", "D'Arcy", "Fox-Pitt", "van Rensburg", "Le Roux", "O'Callaghan-Moore",
                    "Smith-Okafor", "de Burgh", "MacGregor-Hunt", "St. Clair", "Mac Donagh"]},
    "de": {"f": ["Anna-Lena", "Eva-Maria", "Marie-Luise"], "m": ["Hans-Jürgen", "Karl-Heinz", "Jan-Hendrik"],
           "last": ["von der Heide", "zur Mühlen", "Müller-Lüdenscheid", "Schulze-Wehning", "von Bülow-Hart",
                    "auf der Mauer", "Weiß-Öztürk"]},
    "fr": {"f": ["Marie-Hélène", "Anne-Laure", "Marie-Ève"], "m": ["Jean-Luc", "Jean-Marc", "Paul-Henri"],
           "last": ["de Villeneuve", "d'Harcourt", "Le Bihan", "Saint-Clair", "Martin-Dubois", "de la Croix",
                    "d'Estienne-Roux", "Du Pré"]},
    "es": {"f": ["Ana Belén", "María del Mar", "Luz María"], "m": ["José Luis", "Luis Miguel", "Juan Pablo"],
           "last": ["de la Torre", "del Pino", "García-Alonso", "Ruiz de Arana", "de los Santos", "Martín-Calero"]},
    "it": {"f": ["Maria Grazia", "Anna Maria"], "m": ["Gian Paolo", "Pier Francesco"],
           "last": ["D'Amico", "D'Angelo", "De Santis", "Dall'Olio", "La Rosa", "Dell'Orto", "Lo Monaco"]},
    "nl": {"f": ["Anne-Marie", "Marie-José"], "m": ["Jan-Willem", "Pieter-Bas", "Willem-Jan"],
           "last": ["van 't Veer", "'t Jong", "van der Linden", "ter Haar", "in 't Veld", "op de Beek",
                    "van der Zwaan-Smit", "de la Rive"]},
    "pt": {"f": ["Maria Eduarda", "Ana Clara"], "m": ["João Paulo", "José Miguel"],
           "last": ["de Oliveira", "dos Reis", "da Silva Pereira", "do Carmo", "Sá-Nogueira"]},
    "pl": {"f": ["Anna Maria"], "m": ["Jan Paweł"], "last": ["Nowak-Jeziorańska", "Kowal-Bielecka"]},
    "sv": {"f": ["Anna-Karin", "Eva-Lena"], "m": ["Lars-Erik", "Per-Olof"],
           "last": ["von Essen", "af Ugglas", "Lind-Berg", "de Geer"]},
    "tr": {"f": ["Ayşe Nur", "Fatma Zehra"], "m": ["Mehmet Ali", "Ali Rıza"], "last": ["Öz-Demirci", "Kara-Yılmaz"]},
}
for _lang, _more in MORE_NAMES.items():
    for _k, _v in _more.items():
        NAMES[_lang][_k] += _v

# (given name, family name, the name in its own script): signed "Given Family (native)"
CJK = [("Wei", "Zhang", "张伟"), ("Xiaoling", "Chen", "陈晓玲"), ("Jun", "Liu", "刘军"),
       ("Meiling", "Huang", "黄美玲"), ("Haoran", "Zhou", "周浩然"), ("Yifan", "Xu", "徐一凡"),
       ("Takeshi", "Mori", "森 武"), ("Haruka", "Ito", "伊藤 遥"),
       ("Daisuke", "Kobayashi", "小林 大輔"), ("Aiko", "Fujimoto", "藤本 愛子"), ("Ren", "Matsuda", "松田 蓮"),
       ("Sakura", "Yamaguchi", "山口 さくら"), ("Min-jun", "Park", "박민준"), ("Seo-yeon", "Choi", "최서연"),
       ("Ha-eun", "Jung", "정하은"), ("Dong-hyun", "Kang", "강동현"), ("Ji-ho", "Yoon", "윤지호"),
       ("Lan", "Tran", "陳蘭")]

HONORIFICS = {  # (before a full name or a surname); never part of a label
    "en": {"f": ["Ms.", "Mrs.", "Dr.", "Dr", "Prof.", "Miss", "Mx.", "Ms"],
           "m": ["Mr.", "Dr.", "Dr", "Prof.", "Mr", "Mx."]},
    "de": {"f": ["Frau", "Dr.", "Frau Dr.", "Prof. Dr."], "m": ["Herr", "Dr.", "Herr Dr.", "Prof. Dr."]},
    "fr": {"f": ["Mme", "Madame", "Dr", "Maître", "Pr"], "m": ["M.", "Monsieur", "Dr", "Maître", "Pr"]},
    "es": {"f": ["Sra.", "Dña.", "Dra.", "Lic."], "m": ["Sr.", "D.", "Dr.", "Ing."]},
    "it": {"f": ["Dott.ssa", "Sig.ra", "Avv.", "Prof.ssa"], "m": ["Dott.", "Sig.", "Ing.", "Avv."]},
    "nl": {"f": ["mevr.", "Dr.", "mr."], "m": ["dhr.", "Dr.", "ir."]},
    "pt": {"f": ["Sra.", "Dra.", "Eng.ª"], "m": ["Sr.", "Dr.", "Eng."]},
    "pl": {"f": ["Pani", "dr", "mgr"], "m": ["Pan", "dr", "inż."]},
    "sv": {"f": ["Dr.", "Fru"], "m": ["Dr.", "Herr"]},
    "tr": {"f": ["Dr.", "Av."], "m": ["Dr.", "Av."]},
}

FREE_MAIL = {"en": ["gmail.com", "outlook.com", "yahoo.com", "hotmail.co.uk", "icloud.com", "aol.com", "proton.me",
                    "fastmail.fm", "btinternet.com", "bigpond.com", "rediffmail.com", "mail.com"],
             "de": ["gmx.de", "web.de", "t-online.de", "posteo.de", "gmx.at", "bluewin.ch", "freenet.de"],
             "fr": ["orange.fr", "free.fr", "laposte.net", "wanadoo.fr", "sfr.fr", "skynet.be"],
             "es": ["hotmail.es", "yahoo.es", "telefonica.net", "gmail.com", "outlook.es", "prodigy.net.mx"],
             "it": ["libero.it", "virgilio.it", "tiscali.it", "alice.it", "fastwebnet.it"],
             "nl": ["ziggo.nl", "xs4all.nl", "kpnplanet.nl", "hetnet.nl", "telenet.be"],
             "pt": ["sapo.pt", "uol.com.br", "bol.com.br", "terra.com.br", "clix.pt"],
             "pl": ["wp.pl", "o2.pl", "onet.pl", "interia.pl", "gazeta.pl"],
             "sv": ["telia.com", "bredband.net", "spray.se", "hotmail.se"],
             "tr": ["yandex.com.tr", "hotmail.com.tr", "superonline.com", "ttmail.com"]}
TLDS = {"en": [".com", ".co.uk", ".com.au", ".ie", ".io", ".co.za", ".ca", ".in", ".org", ".net", ".co.nz"],
        "de": [".de", ".at", ".ch", ".com", ".eu"], "fr": [".fr", ".be", ".ca", ".com", ".eu"],
        "es": [".es", ".com.mx", ".com.ar", ".com", ".co"], "it": [".it", ".com", ".eu"],
        "nl": [".nl", ".be", ".com", ".eu"], "pt": [".pt", ".com.br", ".com"], "pl": [".pl", ".com.pl", ".eu"],
        "sv": [".se", ".com", ".nu"], "tr": [".com.tr", ".com", ".net.tr"]}

CO_WORDS = ["Alder", "Amber", "Anchor", "Apex", "Arbor", "Aster", "Atlas", "Aurora", "Basalt", "Beacon", "Birch",
            "Bluestone", "Bramble", "Brightline", "Cedar", "Cinder", "Clearwater", "Cobalt", "Copper", "Coral",
            "Crescent", "Crown", "Delta", "Ember", "Evergreen", "Falcon", "Fernwood", "Flint", "Foxglove", "Granite",
            "Harbor", "Hawthorn", "Heron", "Highgate", "Indigo", "Ironbark", "Juniper", "Keystone", "Lantern",
            "Larch", "Linden", "Lodestar", "Magnolia", "Maple", "Marigold", "Meadow", "Millstone", "Northgate",
            "Oakhill", "Onyx", "Orchard", "Pinnacle", "Quarry", "Quartz", "Redwood", "Ridgeway", "Rivermark",
            "Saffron", "Sandpiper", "Silverleaf", "Skylark", "Sparrow", "Stonebridge", "Summit", "Tamarind",
            "Thornbury", "Tidewater", "Vantage", "Westbrook", "Willow", "Windmill", "Yarrow", "Zephyr", "Kestrel",
            "Lumen", "Nimbus", "Orbit", "Polaris", "Solstice", "Tundra", "Verdant", "Wavecrest"]
CO_KINDS = {"en": ["Logistics", "Analytics", "Dental", "Legal LLP", "Builders", "Consulting", "Labs", "Media",
                   "Insurance Group", "Foods", "Properties", "Capital", "Health", "Engineering Ltd", "Design Co.",
                   "Outfitters", "Software", "Partners", "Pharma", "Studio"],
            "de": ["GmbH", "AG", "Haustechnik GmbH", "Logistik GmbH", "Bau GmbH & Co. KG", "Consulting GmbH",
                   "Maschinenbau AG", "Steuerberatung", "Immobilien GmbH", "Medizintechnik GmbH"],
            "fr": ["SARL", "SAS", "Conseil", "Immobilier", "Architectes", "Transports", "Assurances", "Études"],
            "es": ["S.L.", "S.A.", "Asesores", "Arquitectos", "Logística S.L.", "Consultores", "Distribuciones"],
            "it": ["S.r.l.", "S.p.A.", "Consulting S.r.l.", "Impianti", "Logistica", "Studio Associato"],
            "nl": ["B.V.", "Advies", "Bouw B.V.", "Logistiek", "Makelaardij", "Techniek B.V."],
            "pt": ["Lda.", "S.A.", "Consultoria", "Engenharia Ltda.", "Logística", "Arquitetura"],
            "pl": ["Sp. z o.o.", "S.A.", "Consulting", "Logistyka Sp. z o.o.", "Budownictwo"],
            "sv": ["AB", "Konsult AB", "Bygg AB", "Logistik AB", "Fastigheter"],
            "tr": ["A.Ş.", "Ltd. Şti.", "Danışmanlık", "Lojistik A.Ş.", "Mühendislik"]}

JOBS = {"en": ["Head of Procurement", "Sales Manager", "Senior Engineer", "Office Manager", "Research Fellow",
               "Founder & CEO", "Account Executive", "Paralegal", "Practice Manager", "Product Designer",
               "Operations Lead", "Finance Director", "HR Business Partner", "Project Coordinator", "Site Manager",
               "Customer Success Manager", "Senior Lecturer", "Marketing Manager", "Buyer", "IT Administrator"],
        "de": ["Geschäftsführer", "Einkaufsleitung", "Projektleiterin", "Vertrieb Innendienst", "Technischer Leiter",
               "Buchhaltung", "Assistenz der Geschäftsführung", "Personalreferentin"],
        "fr": ["Directrice commerciale", "Chef de projet", "Responsable achats", "Gérant", "Comptable",
               "Assistante de direction", "Ingénieur d'études"],
        "es": ["Director comercial", "Jefa de compras", "Gerente", "Responsable de logística", "Administración",
               "Coordinadora de proyectos"],
        "it": ["Responsabile acquisti", "Direttore tecnico", "Ufficio amministrazione", "Project manager",
               "Titolare", "Segreteria"],
        "nl": ["Inkoper", "Projectleider", "Office manager", "Directeur", "Financieel adviseur", "Accountmanager"],
        "pt": ["Diretora comercial", "Gerente de compras", "Engenheiro de projeto", "Departamento financeiro"],
        "pl": ["Kierownik projektu", "Dział zakupów", "Specjalistka ds. sprzedaży", "Prezes zarządu"],
        "sv": ["Inköpschef", "Projektledare", "Försäljningschef", "Ekonomiansvarig"],
        "tr": ["Satın Alma Müdürü", "Proje Yöneticisi", "Genel Müdür", "Muhasebe Uzmanı"]}


def ascii_fold(s: str) -> str:
    s = s.replace("ß", "ss").replace("ø", "o").replace("ł", "l").replace("Ł", "L").replace("ı", "i").replace("æ", "ae")
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return "".join(c for c in s.lower() if c.isalnum())


@dataclass
class Person:
    first: str
    last: str
    gender: str  # "f" | "m"
    lang: str
    email: str
    phone: str
    native: str | None = None  # the name in its own script (CJK), shown after the romanised one

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    def titled(self, r: random.Random, surname_only: bool = False) -> tuple[str, str]:
        """(an honorific, the name it precedes): ``Frau Dr. Anna Berg`` -> the label keeps ``Anna Berg``."""
        t = r.choice(HONORIFICS[self.lang][self.gender])
        return t, (self.last if surname_only else self.full)


def company(r: random.Random, lang: str, people: tuple[Person, ...] = ()) -> tuple[str, str]:
    """(company name, its mail domain)."""
    kind = r.choice(CO_KINDS[lang])
    if people and r.random() < 0.25:
        base = people[0].last
    else:
        base = r.choice(CO_WORDS) + (r.choice(CO_WORDS).lower() if r.random() < 0.3 else "")
    name = f"{base} {kind}" if r.random() < 0.9 else f"{base} & {r.choice(CO_WORDS)}"
    slug = ascii_fold(base)
    if r.random() < 0.4:
        slug += r.choice(["-" + ascii_fold(kind.split()[0]), ascii_fold(kind.split()[0])[:4], "-group", "hq"])
    return name, slug + r.choice(TLDS[lang])


# Short forms people use in their addresses (the name in the message stays the full one).
NICKNAMES = {"Alexander": "alex", "Benjamin": "ben", "William": "will", "James": "jamie", "Theodore": "theo",
             "Elijah": "eli", "Nicolas": "nico", "Nicolás": "nico", "Katarzyna": "kasia", "Małgorzata": "gosia",
             "Wojciech": "wojtek", "Krzysztof": "krzysiek", "Aleksandra": "ola", "Magdalena": "magda",
             "Bartosz": "bartek", "Grzegorz": "grzesiek", "Jarosław": "jarek", "Francesca": "fra", "Alessandra": "ale",
             "Gianluca": "gianlu", "Massimo": "max", "Christoph": "chris", "Friederike": "rike", "Matthias": "matze",
             "Franziska": "franzi", "Andreas": "andi", "Wolfgang": "wolfi", "Guadalupe": "lupe", "Dolores": "lola",
             "Ignacio": "nacho", "María José": "majo", "Juan Carlos": "juanca", "Inmaculada": "inma",
             "Montserrat": "montse", "Jean-Baptiste": "jb", "Pierre-Yves": "py", "Sébastien": "seb",
             "Anne-Sophie": "annso", "Gabriela": "gabi", "Leonardo": "leo", "Liesbeth": "lies", "Wilhelmina": "mien",
             "Elizabeth": "liz", "Rosalind": "ros", "Philippa": "pippa", "Harriet": "hattie", "Abigail": "abby",
             "Alistair": "ali", "Mackenzie": "kenzie", "Emanuele": "ema", "Tommaso": "tommy", "Valentina": "vale",
             "Leandro": "lean", "Agnieszka": "aga", "Zbigniew": "zbyszek", "Sławomir": "sławek"}
EMAIL_SUFFIX = ["arq", "design", "art", "photo", "music", "home", "work", "pro", "mail", "official", "dev", "ing",
                "studio", "legal", "web"]


def translit(s: str) -> str:
    """German-style spelling without umlauts (``Jörg`` -> ``joerg``), as many Germans, Swiss and Austrians
    write their addresses."""
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue")):
        s = s.replace(a, b)
    return ascii_fold(s)


def _title_case(local: str) -> str:
    return re.sub(r"[a-z]+", lambda m: m.group(0).capitalize(), local)


def email_for(r: random.Random, first: str, last: str, lang: str, domain: str | None = None) -> str:
    """An address the way people pick them: often a plain join of the name, as often something else (a
    nickname, initials, digits, a word, the surname without its particle or apostrophe, umlauts spelt
    out), so the local part must be copied, never rebuilt from the name."""
    fold = translit if lang in ("de", "sv", "tr") and r.random() < 0.5 else ascii_fold
    f = fold(first) or "info"
    l_ = fold(last) or "mail"
    words = [fold(w) for w in re.split(r"[\s'-]+", last) if fold(w)] or [l_]
    core = words[-1]  # van der Meulen -> meulen; D'Alessandro -> alessandro
    dotted = ".".join(words)  # de la Vega -> de.la.vega
    nick = ascii_fold(NICKNAMES[first]) if first in NICKNAMES else f[:r.choice([3, 4, 5])]
    two, year = f"{r.randint(1, 99):02d}", str(r.randint(1965, 2004))
    plain = [f"{f}.{l_}", f"{f[0]}.{l_}", f"{f}{l_}", f"{f}", f"{l_}.{f}", f"{f}_{l_}", f"{f[0]}{l_}", f"{l_}",
             f"{f}-{l_}", f"{f}.{dotted}", f"{f[0]}.{dotted}"]
    other = [f"{f}.{l_}{two}", f"{f}{two}", f"{f[:3]}.{l_[:4]}", f"{nick}.{l_}", f"{nick}", f"{nick}{two}",
             f"{nick}.{core}{two}", f"{nick}{year}", f"{f}.{core}", f"{f[0]}{core}", f"{f}{l_[0]}",
             f"{f[0]}{l_[0]}{two}", f"{f}.{l_}.{r.choice(EMAIL_SUFFIX)}", f"{r.choice(EMAIL_SUFFIX)}.{f}",
             f"{l_}{f[0]}", f"{f}.{l_[0]}", f"{f[0]}.{core}{year[2:]}", f"{nick}_{l_[:4]}"]
    local = r.choice(plain if r.random() < 0.5 else other)
    if domain is None:
        domain = r.choice(FREE_MAIL[lang]) if r.random() < 0.45 else company(r, lang)[1]
    x = r.random()
    if x < 0.03:  # written in capitals, or with capitalised words: kept as written
        return f"{local}@{domain}".upper()
    if x < 0.08:
        local = _title_case(local)
    return f"{local}@{domain}"


def person(r: random.Random, lang: str, taken: set[str] | None = None, domain: str | None = None) -> Person:
    """A new person of ``lang`` whose first and last names differ from those in ``taken`` (updated)."""
    taken = taken if taken is not None else set()
    for _ in range(100):
        if lang == "en" and r.random() < 0.12:
            first, last, native = r.choice(CJK)
            gender = r.choice("fm")
            native = native if r.random() < 0.6 else None
        else:
            gender = r.choice("fm")
            pool = NAMES[lang]
            first, last, native = r.choice(pool[gender]), r.choice(pool["last"]), None
        if lang == "pl":  # Polish surnames agree with the person: Zieliński / Zielińska
            for m_, f_ in (("ski", "ska"), ("cki", "cka")):
                last = last[:-3] + (f_ if gender == "f" else m_) if last.endswith((m_, f_)) else last
        if first not in taken and last not in taken:
            taken.update((first, last))
            return Person(first, last, gender, lang, email_for(r, first, last, lang, domain), phone(r, lang), native)
    raise RuntimeError("name pool exhausted")
