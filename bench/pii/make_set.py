#!/usr/bin/env python3
"""Writes the labelled PII evaluation set: ``dev.jsonl`` (~300 rows) and ``test.jsonl`` (~1500 rows).

The two files use disjoint, hand-written sentence templates and disjoint seeds; values come from
Faker (many locales) and from composers in this file (Luhn-valid cards, checksum-valid IBANs,
SSNs, IPv4/IPv6, US driver's licences and passports, country-specific postal blocks and phone
formats). See README.md for the label rules. The output is deterministic for a given Faker
version (pinned in requirements/dev.txt).

    .venv/bin/python bench/pii/make_set.py --out bench/pii/data
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import re
import string
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from faker import Faker

HERE = Path(__file__).resolve().parent

TYPES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "ZIP_CODE",
    "LOCATION",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
)

SEEDS = {"dev": 90_211, "test": 4_417_003}
ROWS = {"dev": 300, "test": 1500}
HARD_NEGATIVE_SHARE = 0.2

# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

UPPER = string.ascii_uppercase
ALNUM = string.ascii_uppercase + string.digits


def fill(rng: random.Random, pattern: str) -> str:
    """'#' digit, '%' digit 2-9, '^' digit 1-9, '@' upper letter, '*' upper alnum; rest literal."""
    out = []
    for ch in pattern:
        if ch == "#":
            out.append(rng.choice(string.digits))
        elif ch == "%":
            out.append(rng.choice("23456789"))
        elif ch == "^":
            out.append(rng.choice("123456789"))
        elif ch == "@":
            out.append(rng.choice(UPPER))
        elif ch == "*":
            out.append(rng.choice(ALNUM))
        else:
            out.append(ch)
    return "".join(out)


def fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.replace("ß", "ss").replace("ı", "i").replace("ł", "l"))
    s = s.replace("Ł", "L").replace("đ", "d").replace("Đ", "D").replace("ø", "o").replace("æ", "ae")
    s = s.encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z]", "", s).lower()


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_complete(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def iban_compose(country: str, bban: str) -> str:
    s = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in s)) % 97
    return f"{country}{check:02d}{bban}"


def group4(s: str) -> str:
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


# --------------------------------------------------------------------------------------------
# name pools
# --------------------------------------------------------------------------------------------

# fmt: off
# (first, last, full) -- full is written in the order people use; hand-written, fictional
HAND_NAMES: dict[str, list[tuple[str, str, str]]] = {
    "arabic": [
        ("Omar", "Abdel-Rahman", "Omar Abdel-Rahman"),
        ("Fatima", "Al-Zahrani", "Fatima Al-Zahrani"),
        ("Khalid", "bin Saeed", "Khalid bin Saeed"),
        ("Yousef", "Al-Haddad", "Yousef Al-Haddad"),
        ("Layla", "Haddad", "Layla Haddad"),
        ("Mohammed", "El-Amin", "Mohammed El-Amin"),
        ("Noor", "Al-Hashimi", "Noor Al-Hashimi"),
        ("Tariq", "Aziz", "Tariq Aziz"),
        ("Huda", "Nasser", "Huda Nasser"),
        ("Rami", "Khoury", "Rami Khoury"),
        ("Samira", "Benali", "Samira Benali"),
        ("Abdullah", "bin Rashid Al-Nuaimi", "Abdullah bin Rashid Al-Nuaimi"),
        ("Aisha", "Al-Farsi", "Aisha Al-Farsi"),
        ("Hassan", "Abu-Zeid", "Hassan Abu-Zeid"),
        ("Mariam", "Saleh", "Mariam Saleh"),
        ("Zayd", "Qureshi", "Zayd Qureshi"),
        ("Youssef", "El Idrissi", "Youssef El Idrissi"),
        ("Nadia", "Bouazza", "Nadia Bouazza"),
    ],
    "chinese": [
        ("Wei", "Zhang", "Zhang Wei"),
        ("Na", "Li", "Li Na"),
        ("Fang", "Wang", "Wang Fang"),
        ("Jie", "Chen", "Chen Jie"),
        ("Yang", "Liu", "Liu Yang"),
        ("Xiaoming", "Huang", "Huang Xiaoming"),
        ("Lei", "Zhao", "Zhao Lei"),
        ("Mingyu", "Xu", "Xu Mingyu"),
        ("Yi-chen", "Lin", "Lin Yi-chen"),
        ("Tai-man", "Chan", "Chan Tai-man"),
        ("Ka-yan", "Wong", "Wong Ka-yan"),
        ("Jiahui", "Zhou", "Jiahui Zhou"),
        ("Hao", "Sun", "Hao Sun"),
    ],
    "korean": [
        ("Ji-hoon", "Park", "Park Ji-hoon"),
        ("Min-seo", "Kim", "Kim Min-seo"),
        ("Seo-yeon", "Lee", "Seo-yeon Lee"),
        ("Woo-jin", "Choi", "Choi Woo-jin"),
        ("Hae-in", "Jung", "Hae-in Jung"),
        ("Dong-hyun", "Kang", "Kang Dong-hyun"),
    ],
    "vietnamese": [
        ("An", "Nguyen", "Nguyen Van An"),
        ("Mai", "Tran", "Tran Thi Mai"),
        ("Khoa", "Le", "Le Minh Khoa"),
        ("Trang", "Pham", "Pham Thu Trang"),
        ("Duc Anh", "Hoang", "Hoang Duc Anh"),
        ("Lan", "Vu", "Vu Ngoc Lan"),
        ("Bảo", "Đặng", "Đặng Quốc Bảo"),
        ("Hương", "Bùi", "Bùi Thị Hương"),
        ("Tùng", "Nguyễn", "Nguyễn Thanh Tùng"),
        ("Nam", "Phan", "Phan Hoài Nam"),
        ("Linh", "Do", "Do Thuy Linh"),
    ],
    "west_african": [
        ("Adebayo", "Ogunleye", "Adebayo Ogunleye"),
        ("Folasade", "Adeyemi", "Folasade Adeyemi"),
        ("Oluwaseun", "Bakare", "Oluwaseun Bakare"),
        ("Temitope", "Adewale", "Temitope Adewale"),
        ("Chukwuemeka", "Okafor", "Chukwuemeka Okafor"),
        ("Ngozi", "Eze", "Ngozi Eze"),
        ("Babatunde", "Olatunji", "Babatunde Olatunji"),
        ("Yetunde", "Akinola", "Yetunde Akinola"),
        ("Kehinde", "Afolabi", "Kehinde Afolabi"),
        ("Kwame", "Mensah", "Kwame Mensah"),
        ("Abena", "Owusu", "Abena Owusu"),
        ("Ifeoma", "Nwachukwu", "Ifeoma Nwachukwu"),
    ],
    "indian": [
        ("Priya", "Raghunathan", "Priya Raghunathan"),
        ("Venkatesh", "Subramanian", "Venkatesh Subramanian"),
        ("Ananya", "Chatterjee", "Ananya Chatterjee"),
        ("Gurpreet", "Sandhu", "Gurpreet Singh Sandhu"),
        ("Lakshmi", "Narayanan", "Lakshmi Narayanan"),
        ("Rohan", "Deshpande", "Rohan Deshpande"),
        ("Sneha", "Kulkarni", "Sneha Kulkarni"),
        ("Irfan", "Shaikh", "Mohammed Irfan Shaikh"),
        ("Aditi", "Bhattacharya", "Aditi Bhattacharya"),
        ("Karthik", "Iyer", "Karthik Iyer"),
        ("Harpreet", "Kaur", "Harpreet Kaur"),
        ("Sai", "Reddy", "Sai Kiran Reddy"),
    ],
    "particles": [
        ("Ingrid", "van der Meer", "Ingrid van der Meer"),
        ("Pieter", "de Vries", "Pieter de Vries"),
        ("Luis", "de la Fuente", "Luis de la Fuente"),
        ("María", "de los Ángeles Ruiz", "María de los Ángeles Ruiz"),
        ("Ludwig", "von Arnim", "Ludwig von Arnim"),
        ("Giulia", "Di Stefano", "Giulia Di Stefano"),
        ("Marco", "De Luca", "Marco De Luca"),
        ("Ahmad", "bin Ismail", "Ahmad bin Ismail"),
        ("Siti", "binti Hassan", "Siti binti Hassan"),
        ("Anne-Marie", "du Plessis", "Anne-Marie du Plessis"),
        ("João", "dos Santos", "João dos Santos"),
        ("Ana", "da Silva", "Ana da Silva"),
        ("Jan", "van den Broek", "Jan van den Broek"),
        ("Kees", "ter Horst", "Kees ter Horst"),
        ("Sofia", "dell'Orto", "Sofia dell'Orto"),
        ("Liam", "O'Connor", "Liam O'Connor"),
        ("Siobhán", "O'Sullivan", "Siobhán O'Sullivan"),
        ("Eamon", "McAllister", "Eamon McAllister"),
        ("Léa", "Le Gall", "Léa Le Gall"),
        ("Rashid", "al-Masri", "Rashid al-Masri"),
        ("Nicolás", "de León", "Nicolás de León"),
        ("Mette", "van 't Hof", "Mette van 't Hof"),
    ],
    "hyphenated": [
        ("Anna-Lena", "Müller-Schmidt", "Anna-Lena Müller-Schmidt"),
        ("Jean-Pierre", "Lefèvre", "Jean-Pierre Lefèvre"),
        ("Marie-Claire", "Dubois-Laurent", "Marie-Claire Dubois-Laurent"),
        ("Hans-Jürgen", "Becker", "Hans-Jürgen Becker"),
        ("Karl-Heinz", "Vogel", "Karl-Heinz Vogel"),
        ("Sarah", "Jones-Whitfield", "Sarah Jones-Whitfield"),
        ("Lily-Rose", "Thompson-Hart", "Lily-Rose Thompson-Hart"),
        ("Ann-Kathrin", "Weiß", "Ann-Kathrin Weiß"),
        ("Eva-Maria", "Hofer", "Eva-Maria Hofer"),
        ("José-Luis", "Ortega-Romero", "José-Luis Ortega-Romero"),
        ("Mary-Beth", "Kowalczyk-Reyes", "Mary-Beth Kowalczyk-Reyes"),
        ("Aino-Maija", "Lehtonen", "Aino-Maija Lehtonen"),
    ],
}

FAKER_NAME_LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "fi_FI", "pl_PL",
    "sv_SE", "tr_TR", "en_IN", "yo_NG", "ga_IE", "da_DK", "cs_CZ", "ja_JP",
)  # fmt: skip

GLOBAL_NAME_POOL = [
    ("en_US", 10), ("en_GB", 5), ("de_DE", 5), ("fr_FR", 4), ("es_ES", 4), ("it_IT", 3),
    ("nl_NL", 4), ("pt_BR", 3), ("fi_FI", 3), ("pl_PL", 3), ("sv_SE", 2), ("tr_TR", 3),
    ("en_IN", 3), ("yo_NG", 2), ("ga_IE", 1), ("da_DK", 1), ("cs_CZ", 1), ("ja_JP", 3),
    ("hand:arabic", 4), ("hand:chinese", 3), ("hand:korean", 2), ("hand:vietnamese", 3),
    ("hand:west_african", 3), ("hand:indian", 3), ("hand:particles", 5), ("hand:hyphenated", 4),
]  # fmt: skip

# --------------------------------------------------------------------------------------------
# address data (hand-written lists; fictional combinations)
# --------------------------------------------------------------------------------------------

US_CITIES = [
    ("Springfield", "IL"), ("Austin", "TX"), ("Portland", "OR"), ("Columbus", "OH"),
    ("Raleigh", "NC"), ("Tucson", "AZ"), ("Boise", "ID"), ("Madison", "WI"), ("Albany", "NY"),
    ("Sacramento", "CA"), ("Denver", "CO"), ("Tampa", "FL"), ("Savannah", "GA"), ("Omaha", "NE"),
    ("Burlington", "VT"), ("Ann Arbor", "MI"), ("Fresno", "CA"), ("Pittsburgh", "PA"),
    ("Richmond", "VA"), ("Knoxville", "TN"), ("Spokane", "WA"), ("Baton Rouge", "LA"),
    ("Des Moines", "IA"), ("Provo", "UT"), ("Newark", "NJ"), ("Worcester", "MA"),
    ("Brooklyn", "NY"), ("St. Louis", "MO"), ("Salt Lake City", "UT"), ("Minneapolis", "MN"),
    ("Chattanooga", "TN"), ("Santa Fe", "NM"), ("Anchorage", "AK"), ("Honolulu", "HI"),
    ("Wilmington", "DE"), ("Charleston", "SC"), ("Lexington", "KY"), ("Reno", "NV"),
]  # fmt: skip
US_STREET_NAMES = [
    "Maple", "Oak", "Cedar", "Elm", "Washington", "Lincoln", "Lakeview", "Sunset", "Pine Ridge",
    "Mill Creek", "Highland", "Jefferson", "Willow", "Chestnut", "Franklin", "Meadowbrook",
    "Hillcrest", "Park", "Riverside", "Magnolia", "Walnut", "Sycamore", "Dogwood", "Grant",
    "Bayview", "Hawthorne", "Cherry Hill", "Old Mill", "Spring Valley", "Martin Luther King Jr",
    "5th", "3rd", "42nd", "Broad", "Market", "College", "Fairview", "Briarwood",
]  # fmt: skip
US_SUFFIXES = [
    "St", "Street", "Ave", "Avenue", "Blvd", "Rd", "Road", "Drive", "Dr", "Lane", "Ln", "Court",
    "Ct", "Way", "Place", "Pl", "Terrace", "Pkwy", "Circle", "Trail",
]  # fmt: skip
US_STATE_NAMES = {
    "IL": "Illinois", "TX": "Texas", "OR": "Oregon", "OH": "Ohio", "NC": "North Carolina",
    "AZ": "Arizona", "ID": "Idaho", "WI": "Wisconsin", "NY": "New York", "CA": "California",
    "CO": "Colorado", "FL": "Florida", "GA": "Georgia", "NE": "Nebraska", "VT": "Vermont",
    "MI": "Michigan", "PA": "Pennsylvania", "VA": "Virginia", "TN": "Tennessee",
    "WA": "Washington", "LA": "Louisiana", "IA": "Iowa", "UT": "Utah", "NJ": "New Jersey",
    "MA": "Massachusetts", "MO": "Missouri", "MN": "Minnesota", "NM": "New Mexico",
    "AK": "Alaska", "HI": "Hawaii", "DE": "Delaware", "SC": "South Carolina", "KY": "Kentucky",
    "NV": "Nevada",
}  # fmt: skip

UK_TOWNS = [
    "London", "Manchester", "Leeds", "Bristol", "Cardiff", "Edinburgh", "Glasgow", "Norwich",
    "York", "Brighton", "Reading", "Oxford", "Belfast", "Sheffield", "Leicester", "Nottingham",
    "Aberdeen", "Swansea", "Exeter", "Cambridge", "Bath", "Derby", "Lancaster", "Dundee",
    "Milton Keynes", "Stoke-on-Trent",
]  # fmt: skip
UK_DISTRICTS = [
    "Didsbury", "Headingley", "Clifton", "Canton", "Leith", "Jesmond", "Hove", "Walthamstow",
    "Moseley", "Chorlton", "Stockbridge", "Roath", "Kentish Town", "Partick",
]  # fmt: skip
UK_STREET_NAMES = [
    "Victoria", "Church", "Station", "Mill", "Park", "Queen's", "King's", "Albert", "Windsor",
    "Manor", "Orchard", "Chapel", "Meadow", "Springfield", "Highfield", "Beech", "Willow",
    "Ashby", "Grange", "St John's", "Cromwell", "Elmwood", "Kingsley", "Hollybush",
]  # fmt: skip
UK_TYPES = [
    "Road", "Street", "Lane", "Close", "Crescent", "Gardens", "Grove", "Mews", "Terrace",
    "Avenue", "Drive", "Way", "Place", "Row", "Square", "Hill",
]  # fmt: skip
UK_HOUSE_NAMES = ["Rose Cottage", "The Old Rectory", "Ivy House", "Holly Lodge", "The Coach House"]

FR_CITIES = [
    "Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Bordeaux", "Lille", "Strasbourg",
    "Rennes", "Montpellier", "Nice", "Grenoble", "Dijon", "Angers", "Reims", "Tours", "Rouen",
    "Clermont-Ferrand", "Aix-en-Provence", "Saint-Étienne",
]  # fmt: skip
FR_STREETS = [
    "de la République", "Victor Hugo", "des Lilas", "du Général Leclerc", "Jean Jaurès",
    "Pasteur", "de la Gare", "des Écoles", "Saint-Michel", "Gambetta", "du Moulin",
    "de la Paix", "des Acacias", "Émile Zola", "du Faubourg Saint-Antoine", "des Tanneurs",
]  # fmt: skip
FR_TYPES = ["rue", "avenue", "boulevard", "place", "allée", "impasse", "chemin", "quai"]

ES_CITIES = [
    "Madrid", "Barcelona", "Valencia", "Sevilla", "Zaragoza", "Málaga", "Bilbao", "Granada",
    "Valladolid", "Alicante", "Palma", "Santander", "Salamanca", "Córdoba", "Vigo", "Oviedo",
]  # fmt: skip
IT_CITIES = [
    ("Milano", "MI"), ("Roma", "RM"), ("Torino", "TO"), ("Napoli", "NA"), ("Bologna", "BO"),
    ("Firenze", "FI"), ("Genova", "GE"), ("Palermo", "PA"), ("Verona", "VR"), ("Bari", "BA"),
    ("Padova", "PD"), ("Trieste", "TS"), ("Bergamo", "BG"), ("Lecce", "LE"), ("Perugia", "PG"),
]  # fmt: skip
IT_STREETS = [
    "Roma", "Garibaldi", "Dante Alighieri", "Giuseppe Verdi", "XX Settembre", "Mazzini",
    "Cavour", "dei Mille", "Nazionale", "San Francesco", "Vittorio Emanuele II", "delle Rose",
    "Marconi", "della Libertà",
]  # fmt: skip
IT_TYPES = ["Via", "Viale", "Piazza", "Corso", "Vicolo", "Largo"]

BR_CITIES = [
    ("São Paulo", "SP"), ("Rio de Janeiro", "RJ"), ("Belo Horizonte", "MG"), ("Curitiba", "PR"),
    ("Porto Alegre", "RS"), ("Recife", "PE"), ("Salvador", "BA"), ("Fortaleza", "CE"),
    ("Campinas", "SP"), ("Florianópolis", "SC"), ("Manaus", "AM"), ("Goiânia", "GO"),
    ("Belém", "PA"), ("Niterói", "RJ"),
]  # fmt: skip
BR_BAIRROS = [
    "Jardim Paulista", "Copacabana", "Savassi", "Boa Viagem", "Moinhos de Vento", "Batel",
    "Pinheiros", "Botafogo", "Centro", "Lapa", "Vila Mariana", "Itaim Bibi", "Meireles",
    "Barra da Tijuca",
]  # fmt: skip
BR_STREETS = [
    "das Flores", "Augusta", "Sete de Setembro", "Barão de Mauá", "XV de Novembro",
    "Padre Anchieta", "Santos Dumont", "Marechal Deodoro", "dos Andradas", "Oscar Freire",
    "Brigadeiro Faria Lima", "Getúlio Vargas",
]  # fmt: skip
BR_TYPES = ["Rua", "Avenida", "Av.", "Travessa", "Alameda", "R."]

JP_PLACES = [
    ("Shibuya", "Shibuya-ku", "Tokyo"), ("Ebisu", "Shibuya-ku", "Tokyo"),
    ("Nishi-Shinjuku", "Shinjuku-ku", "Tokyo"), ("Kichijoji-Honcho", "Musashino-shi", "Tokyo"),
    ("Umeda", "Kita-ku", "Osaka"), ("Namba", "Chuo-ku", "Osaka"), ("Sakae", "Naka-ku", "Nagoya"),
    ("Gion-machi", "Higashiyama-ku", "Kyoto"), ("Tenjin", "Chuo-ku", "Fukuoka"),
    ("Minatomirai", "Nishi-ku", "Yokohama"), ("Odori-nishi", "Chuo-ku", "Sapporo"),
    ("Sannomiya-cho", "Chuo-ku", "Kobe"), ("Kamiyacho", "Naka-ku", "Hiroshima"),
]  # fmt: skip
JP_BUILDINGS = ["Sakura Mansion", "Grand Maison", "Park Heights", "Villa Aoba", "Lions Plaza", "Maison Midori"]

IN_PLACES = [
    ("Bengaluru", "Karnataka", "560", ["Indiranagar", "Koramangala", "Jayanagar", "HSR Layout"]),
    ("Mumbai", "Maharashtra", "400", ["Andheri West", "Bandra East", "Powai", "Dadar"]),
    ("Chennai", "Tamil Nadu", "600", ["Adyar", "T. Nagar", "Velachery", "Anna Nagar"]),
    ("Hyderabad", "Telangana", "500", ["Banjara Hills", "Madhapur", "Kukatpally"]),
    ("New Delhi", "Delhi", "110", ["Lajpat Nagar", "Dwarka", "Saket", "Karol Bagh"]),
    ("Pune", "Maharashtra", "411", ["Kothrud", "Baner", "Viman Nagar"]),
    ("Kolkata", "West Bengal", "700", ["Salt Lake", "Ballygunge", "Behala"]),
    ("Jaipur", "Rajasthan", "302", ["Malviya Nagar", "Vaishali Nagar"]),
    ("Ahmedabad", "Gujarat", "380", ["Navrangpura", "Satellite", "Bopal"]),
    ("Kochi", "Kerala", "682", ["Kakkanad", "Edappally", "Fort Kochi"]),
    ("Lucknow", "Uttar Pradesh", "226", ["Gomti Nagar", "Hazratganj"]),
]  # fmt: skip
IN_ROADS = [
    "14th Cross Road", "MG Road", "2nd Main Road", "Nehru Street", "Link Road", "Station Road",
    "100 Feet Road", "Gandhi Marg", "Temple Street", "Ring Road", "5th Block", "Sector 21",
]  # fmt: skip
IN_BUILDINGS = ["Sai Residency", "Shanti Apartments", "Prestige Lakeside", "Green Park Towers", "Sri Krishna Enclave"]

TR_PLACES = [
    ("İstanbul", "Kadıköy", "34"), ("İstanbul", "Beşiktaş", "34"), ("İstanbul", "Üsküdar", "34"),
    ("Ankara", "Çankaya", "06"), ("Ankara", "Keçiören", "06"), ("İzmir", "Karşıyaka", "35"),
    ("İzmir", "Bornova", "35"), ("Bursa", "Nilüfer", "16"), ("Antalya", "Muratpaşa", "07"),
    ("Eskişehir", "Tepebaşı", "26"),
]  # fmt: skip
TR_MAHALLE = ["Caferağa", "Moda", "Bostancı", "Kızılay", "Bahçelievler", "Cumhuriyet", "Yenimahalle", "Fenerbahçe", "Alsancak"]
TR_STREETS = ["Bağdat", "Moda", "Atatürk", "İstiklal", "Gazi Mustafa Kemal", "Şehit Ali Er", "Lale", "Gül", "Menekşe", "Kordon"]

CA_CITIES = [
    ("Toronto", "ON", "M"), ("Ottawa", "ON", "K"), ("Mississauga", "ON", "L"), ("Montréal", "QC", "H"),
    ("Québec", "QC", "G"), ("Gatineau", "QC", "J"), ("Vancouver", "BC", "V"), ("Victoria", "BC", "V"),
    ("Calgary", "AB", "T"), ("Edmonton", "AB", "T"), ("Winnipeg", "MB", "R"), ("Halifax", "NS", "B"),
    ("Saskatoon", "SK", "S"), ("Regina", "SK", "S"), ("St. John's", "NL", "A"), ("Moncton", "NB", "E"),
]  # fmt: skip
CA_FR_STREETS = ["Sainte-Catherine Ouest", "Saint-Denis", "Laurier Est", "de Maisonneuve", "René-Lévesque", "Saint-Jean"]

AU_PLACES = [
    ("Fitzroy", "VIC", "3065"), ("Newtown", "NSW", "2042"), ("Surry Hills", "NSW", "2010"),
    ("Paddington", "QLD", "4064"), ("Fremantle", "WA", "6160"), ("Glenelg", "SA", "5045"),
    ("Sandy Bay", "TAS", "7005"), ("Braddon", "ACT", "2612"), ("Carlton", "VIC", "3053"),
    ("Manly", "NSW", "2095"), ("West End", "QLD", "4101"), ("Subiaco", "WA", "6008"),
]  # fmt: skip
AU_STREETS = ["Smith", "George", "King", "Queen", "Elizabeth", "Bourke", "Chapel", "Brunswick", "Beach", "Ocean", "Railway", "Bridge"]
AU_TYPES = ["Street", "St", "Road", "Rd", "Parade", "Avenue", "Ave", "Crescent", "Terrace", "Lane"]

IE_PLACES = [
    ("Ballina", "Mayo", "F26"), ("Galway", "Galway", "H91"), ("Cork", "Cork", "T12"),
    ("Kilkenny", "Kilkenny", "R95"), ("Dundalk", "Louth", "A91"), ("Tralee", "Kerry", "V92"),
    ("Sligo", "Sligo", "F91"), ("Dún Laoghaire", "Dublin", "A96"), ("Ennis", "Clare", "V95"),
]  # fmt: skip
IE_STREETS = ["Main Street", "Church Road", "Mill Lane", "Shop Street", "Strand Road", "O'Connell Street", "Green Lane"]
EIRCODE_CHARS = "ACDEFHKNPRTVWXY0123456789"

COUNTRY_NAMES = {
    "US": ["USA", "United States", "U.S.A."], "UK": ["United Kingdom", "UK", "England", "Scotland"],
    "DE": ["Deutschland", "Germany"], "AT": ["Österreich", "Austria"], "CH": ["Schweiz", "Switzerland"],
    "NL": ["Nederland", "Netherlands", "The Netherlands"], "FR": ["France"], "ES": ["España", "Spain"],
    "IT": ["Italia", "Italy"], "FI": ["Suomi", "Finland"], "SE": ["Sverige", "Sweden"],
    "DK": ["Danmark", "Denmark"], "PL": ["Polska", "Poland"], "CZ": ["Česká republika", "Czech Republic"],
    "BR": ["Brasil", "Brazil"], "JP": ["Japan"], "IN": ["India"], "TR": ["Türkiye", "Turkey"],
    "CA": ["Canada"], "AU": ["Australia"], "IE": ["Ireland", "Éire"],
}  # fmt: skip

PROFILE_WEIGHTS = {
    "US": 20, "UK": 9, "DE": 8, "FR": 6, "NL": 5, "ES": 5, "IT": 5, "FI": 4, "SE": 3, "PL": 4,
    "BR": 5, "JP": 4, "IN": 5, "TR": 4, "CA": 4, "AU": 3, "AT": 2, "CH": 2, "DK": 2, "CZ": 2, "IE": 2,
}  # fmt: skip
NATIVE_NAMES = {
    "US": ["en_US", "en_US", "hand:hyphenated", "hand:chinese", "hand:korean", "hand:west_african"],
    "UK": ["en_GB", "en_GB", "en_IN", "yo_NG", "hand:arabic"], "DE": ["de_DE", "de_DE", "tr_TR", "pl_PL"],
    "AT": ["de_DE"], "CH": ["de_DE", "fr_FR", "it_IT"], "NL": ["nl_NL", "nl_NL", "tr_TR", "hand:arabic"],
    "FR": ["fr_FR", "fr_FR", "hand:arabic", "hand:vietnamese"], "ES": ["es_ES"], "IT": ["it_IT"],
    "FI": ["fi_FI", "fi_FI", "sv_SE"], "SE": ["sv_SE", "sv_SE", "hand:arabic"], "DK": ["da_DK"],
    "PL": ["pl_PL"], "CZ": ["cs_CZ"], "BR": ["pt_BR", "pt_BR", "ja_JP"], "JP": ["ja_JP"],
    "IN": ["en_IN", "hand:indian"], "TR": ["tr_TR"], "CA": ["en_US", "fr_FR", "hand:chinese", "hand:indian"],
    "AU": ["en_GB", "hand:chinese", "hand:vietnamese", "hand:korean"], "IE": ["ga_IE", "en_GB"],
}  # fmt: skip
FAKER_LOCALE = {
    "US": "en_US", "UK": "en_GB", "DE": "de_DE", "AT": "de_AT", "CH": "de_CH", "NL": "nl_NL",
    "FR": "fr_FR", "ES": "es_ES", "IT": "it_IT", "FI": "fi_FI", "SE": "sv_SE", "DK": "da_DK",
    "PL": "pl_PL", "CZ": "cs_CZ", "BR": "pt_BR", "JP": "ja_JP", "IN": "en_IN", "TR": "tr_TR",
    "CA": "en_CA", "AU": "en_AU", "IE": "ga_IE",
}  # fmt: skip

PHONE_PATTERNS = {
    "US": ["(%##) %##-####", "%##-%##-####", "%##.%##.####", "+1 %## %## ####", "+1-%##-%##-####",
           "1-800-%##-####", "(%##) 555-01## x###", "%## %## #### ext. ##", "%#########"],
    "CA": ["(%##) %##-####", "%##-%##-####", "+1 (%##) %##-####", "+1 %##-%##-#### poste ##"],
    "UK": ["+44 20 7946 0###", "020 7### ####", "07700 900###", "+44 7### ######", "+44 (0)161 496 0###",
           "0113 496 0###", "+447#########", "01632 960###"],
    "DE": ["+49 (0)30 #######", "030 ########", "+49 151 ########", "0049 89 #######", "017#/#######",
           "+49 40 ### ### ##", "0221 ### ##-##", "+49 (0) 711 ######"],
    "AT": ["+43 1 ### ####", "0664 ### ####", "+43 (0)662 ######"],
    "CH": ["+41 44 ### ## ##", "079 ### ## ##", "0041 31 ### ## ##"],
    "FR": ["01 ## ## ## ##", "+33 6 ## ## ## ##", "0033 1 ## ## ## ##", "06.##.##.##.##",
           "+33 (0)4 ## ## ## ##", "07 ## ## ## ##"],
    "NL": ["06-########", "+31 6 ########", "020-#######", "+31 (0)20 ### ####", "010 ### ####",
           "06 ## ## ## ##"],
    "ES": ["+34 6## ## ## ##", "91# ### ###", "6## ### ###", "+34 93 ### ## ##"],
    "IT": ["+39 06 #### ####", "33# ### ####", "+39 347 #######", "02 ########", "+39 02-#######"],
    "FI": ["+358 40 ### ####", "040 ### ####", "09 #### ####", "+358 (0)50 ### ####", "+35845#######"],
    "SE": ["+46 70 ### ## ##", "070-### ## ##", "08-### ### ##", "+46 (0)8 ### ### ##", "073 ### ## ##"],
    "DK": ["+45 ## ## ## ##", "%# ## ## ##", "0045 %#######"],
    "PL": ["+48 5## ### ###", "22 ### ## ##", "6## ### ###", "+48 (22) ### ## ##"],
    "CZ": ["+420 6## ### ###", "00420 7## ### ###", "2## ### ###"],
    "BR": ["+55 11 9####-####", "(11) 9####-####", "(21) 3###-####", "+55 (31) 9 ####-####", "11 9########"],
    "JP": ["+81 3-####-####", "03-####-####", "090-####-####", "+81 90 #### ####", "06-####-####",
           "(03) ####-####"],
    "IN": ["+91 9#### #####", "09#### #####", "080-#### ####", "+91-9#########", "+91 (22) #### ####",
           "9#########"],
    "TR": ["+90 5## ### ## ##", "05## ### ## ##", "(0212) ### ## ##", "0 (216) ### ## ##", "+90 312 ### ## ##"],
    "AU": ["+61 2 #### ####", "04## ### ###", "(02) #### ####", "+61 4## ### ###", "1300 ### ###"],
    "IE": ["+353 87 ### ####", "087 ### ####", "(01) ### ####", "+353 1 ### ####"],
}  # fmt: skip
FAKER_PHONE_OK = {"US", "UK", "FR", "ES", "PL", "CH", "CZ", "IT", "BR", "CA", "SE", "DK"}

EMAIL_DOMAINS = {
    "US": ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com", "comcast.net"],
    "UK": ["btinternet.com", "yahoo.co.uk", "hotmail.co.uk", "gmail.com", "sky.com"],
    "DE": ["web.de", "gmx.de", "t-online.de", "gmail.com", "posteo.de"],
    "AT": ["gmx.at", "aon.at"], "CH": ["bluewin.ch", "gmx.ch"],
    "FR": ["orange.fr", "free.fr", "laposte.net", "gmail.com"], "ES": ["hotmail.es", "telefonica.net", "gmail.com"],
    "IT": ["libero.it", "virgilio.it", "gmail.com"], "NL": ["ziggo.nl", "kpnmail.nl", "gmail.com"],
    "BR": ["uol.com.br", "bol.com.br", "gmail.com"], "FI": ["elisanet.fi", "gmail.com", "luukku.com"],
    "SE": ["telia.com", "gmail.com", "bredband.net"], "PL": ["wp.pl", "onet.pl", "o2.pl"],
    "TR": ["hotmail.com", "gmail.com", "yandex.com.tr"], "IN": ["rediffmail.com", "gmail.com", "yahoo.co.in"],
    "JP": ["yahoo.co.jp", "docomo.ne.jp", "gmail.com"], "CA": ["rogers.com", "shaw.ca", "gmail.com"],
    "AU": ["bigpond.com", "optusnet.com.au", "gmail.com"], "IE": ["eircom.net", "gmail.com"],
    "DK": ["mail.dk", "gmail.com"], "CZ": ["seznam.cz", "email.cz"],
}  # fmt: skip
WORK_DOMAINS = [
    "northwind-traders.com", "globex.example", "initech.io", "kestrel-freight.de", "blueharbor.co",
    "lumen-retail.nl", "fjordsystems.se", "atelier-mistral.fr", "solaris-energia.es", "helixbio.com",
    "mail.uni-heidelberg.de", "student.uva.nl", "tidewater-ins.com", "pinecrest.dental",
]  # fmt: skip
ROLE_MAILBOXES = ["billing", "support", "accounts.payable", "hr", "info", "privacy", "orders", "returns"]

# IBAN composers for countries Faker has no bank provider for (checksum computed here)
IBAN_BBAN = {"SE": "####################", "BE": "############", "NO": "###########",
             "IE": "@@@@##############", "PT": "#####################", "LU": "################"}  # fmt: skip
FAKER_IBAN = {"DE": "de_DE", "AT": "de_AT", "CH": "de_CH", "FR": "fr_FR", "ES": "es_ES", "IT": "it_IT",
              "NL": "nl_NL", "UK": "en_GB", "PL": "pl_PL", "FI": "fi_FI", "BR": "pt_BR", "TR": "tr_TR",
              "DK": "da_DK", "CZ": "cs_CZ"}  # fmt: skip

DL_STATES = [
    ("California", "CA", ["@#######"]), ("New York", "NY", ["### ### ###", "#########"]),
    ("Florida", "FL", ["@###-###-##-###-#", "@############"]), ("Illinois", "IL", ["@###-####-####"]),
    ("Texas", "TX", ["########"]), ("Pennsylvania", "PA", ["## ### ###", "########"]),
    ("Washington", "WA", ["WDL*********"]), ("New Jersey", "NJ", ["@#### ##### #####"]),
    ("Michigan", "MI", ["@ ### ### ### ###"]), ("Ohio", "OH", ["@@######"]),
    ("Massachusetts", "MA", ["S########"]), ("Georgia", "GA", ["#########"]),
    ("Colorado", "CO", ["##-###-####"]), ("Arizona", "AZ", ["@########"]),
    ("Wisconsin", "WI", ["@###-####-####-##"]), ("Virginia", "VA", ["@##-##-####"]),
    ("Maryland", "MD", ["@-###-###-###-###"]), ("Oregon", "OR", ["#######"]),
]  # fmt: skip

# --------------------------------------------------------------------------------------------
# non-PII filler values (used in hard negatives and as distractors beside real PII)
# --------------------------------------------------------------------------------------------

PRODUCTS = [
    "Acme CloudSync Pro", "Jira", "Confluence", "Windows Server 2019", "Office 365", "Salesforce",
    "Zendesk", "Slack", "Photoshop", "Kubernetes", "PostgreSQL 15", "Nimbus Backup", "Orbit CRM",
    "PixelPrint 3000", "AeroDesk standing desk", "SmartThermo X2", "Vortex Blender 900",
    "TrailRunner GTX", "Main Street Edition", "Harbor Suite", "QuickBooks", "Tableau",
]  # fmt: skip
COMPANIES = [
    "Northwind Traders", "Globex Corporation", "Initech", "Umbrella Logistics", "Contoso Ltd",
    "Blue Harbor Analytics", "Fjord Systems AB", "Kestrel Freight GmbH", "Solaris Energia S.A.",
    "Lumen Retail BV", "Orchid Labs", "Tidewater Insurance", "Pinecrest Dental Group",
    "Helix Biotech", "Quarry & Co", "Brightline Telecom", "Nordlicht Versand GmbH",
    "Atelier Mistral SARL", "Zenith Pharma", "Vela Mobility",
]  # fmt: skip
MODELS = [
    "ThinkPad X1 Carbon Gen 11", "iPhone 13 mini", "Galaxy S23", "Pixel 8", "MacBook Air M2",
    "Dell XPS 15", "PlayStation 5", "Kindle Paperwhite", "Surface Pro 9", "Nintendo Switch OLED",
]  # fmt: skip
HOSTS = [
    "db-prod-03.internal", "api.acme-cloud.example", "cache-eu-west-1b", "build-agent-17",
    "k8s-node-pool-a-x7f2", "mail-relay02.corp.example", "grafana.ops.example", "ci.example.org",
]  # fmt: skip
PATHS = [
    "/var/log/nginx/error.log", r"C:\Program Files\Acme\sync.exe", "~/projects/app/config.yaml",
    "/etc/systemd/system/worker.service", "s3://acme-backups/2024/03/", r"D:\Exports\Q3_report_final_v2.xlsx",
    "/opt/app/releases/20240311/bin/server", "./node_modules/.cache/webpack",
]  # fmt: skip
ERRORS = [
    "0x80070005", "0xC000021A", "E_ACCESSDENIED", "ORA-12541", "ERR_CONNECTION_RESET",
    "ECONNREFUSED", "HTTP 503", "HTTP 429 Too Many Requests", "SQLSTATE 40001", "exit code 137",
    "AADSTS50126", "0x800F0922", "NXDOMAIN", "SIGSEGV",
]  # fmt: skip
URLS = [
    "https://status.acme-cloud.example/incidents/4821", "https://docs.example.com/v2/api/errors#rate-limit",
    "https://hooks.example.org/ingest/prod", "https://git.example.com/platform/api/-/merge_requests/1187",
]  # fmt: skip
FLIGHTS = ["LH 441", "BA2490", "UA 901", "KL1002", "TK 1822", "AF 1140", "SK 1469", "AY 831", "JL 44"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
COLORS = ["BLK", "WHT", "RED", "NVY", "GRN"]
# fmt: on


# --------------------------------------------------------------------------------------------
# value generation
# --------------------------------------------------------------------------------------------


@dataclass
class Person:
    first: str
    last: str
    full: str
    origin: str


@dataclass
class Addr:
    kind: str
    street: str  # the street line as written inline (unit included)
    street_main: str  # street line without a unit that a block may put on its own line
    unit_line: str | None
    district: str | None
    city: str
    region: str | None
    zip: str
    country: str
    zip_prefix: str = ""
    extra: dict = field(default_factory=dict)


class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fk: dict[str, Faker] = {}
        locales = sorted(set(FAKER_NAME_LOCALES) | set(FAKER_LOCALE.values()))
        for i, loc in enumerate(locales):
            f = Faker(loc)
            f.seed_instance(seed * 31 + i)
            self.fk[loc] = f

    # -- choice helpers
    def choice(self, seq):
        return self.rng.choice(seq)

    def wchoice(self, pairs):
        items = [p[0] for p in pairs]
        weights = [p[1] for p in pairs]
        return self.rng.choices(items, weights=weights, k=1)[0]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def profile(self, only: tuple[str, ...] | None = None) -> str:
        keys = list(only) if only else list(PROFILE_WEIGHTS)
        return self.wchoice([(k, PROFILE_WEIGHTS[k]) for k in keys])

    # -- persons
    def person(self, profile: str | None = None) -> Person:
        if profile and self.chance(0.55):
            pool = self.choice(NATIVE_NAMES[profile])
        else:
            pool = self.wchoice(GLOBAL_NAME_POOL)
        if pool.startswith("hand:"):
            first, last, full = self.choice(HAND_NAMES[pool[5:]])
            return Person(first, last, full, pool)
        f = self.fk[pool]
        if pool == "ja_JP":
            first, last = f.first_romanized_name(), f.last_romanized_name()
            full = f"{last} {first}" if self.chance(0.4) else f"{first} {last}"
            return Person(first, last, full, pool)
        first, last = f.first_name(), f.last_name()
        if pool == "es_ES" and self.chance(0.6):
            last = f"{last} {f.last_name()}"
        if pool == "pt_BR" and self.chance(0.4):
            last = f"{f.last_name()} {last}"
        full = f"{first} {last}"
        if pool in ("en_US", "en_GB") and self.chance(0.12):
            full = f"{first} {self.choice(UPPER)}. {last}"
        return Person(first, last, full, pool)

    def email_for(self, p: Person, profile: str) -> str:
        fi, la = fold(p.first), fold(p.last)
        if not fi or not la:
            return self.fk["en_US"].free_email()
        n = self.rng.randint(1, 99)
        local = self.choice([
            f"{fi}.{la}", f"{fi[0]}{la}", f"{fi}_{la}{n}", f"{fi}{la[0]}", f"{la}.{fi}",
            f"{fi}{self.rng.randint(1960, 2005)}", f"{fi}.{la}+{self.choice(['shop', 'news', 'bank', 'amzn'])}",
            f"{fi}-{la}", f"{fi[0]}.{la}{n}", f"{la}{fi[0]}",
        ])  # fmt: skip
        if self.chance(0.3):
            domain = self.choice(WORK_DOMAINS)
        else:
            domain = self.choice(EMAIL_DOMAINS.get(profile, EMAIL_DOMAINS["US"]))
        email = f"{local}@{domain}"
        if self.chance(0.06):
            email = f"{local.title()}@{domain}"
        return email

    def email_any(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return f"{self.choice(ROLE_MAILBOXES)}@{self.choice(WORK_DOMAINS)}"
        if r < 0.7:
            return self.fk[self.choice(["en_US", "en_GB", "de_DE", "fr_FR"])].free_email()
        return (
            self.fk["en_US"].user_name()
            + str(self.rng.randint(1, 999))
            + "@"
            + self.choice(EMAIL_DOMAINS["US"])
        )

    # -- phones
    def phone(self, profile: str) -> str:
        if profile in FAKER_PHONE_OK and self.chance(0.2):
            return self.fk[FAKER_LOCALE[profile]].phone_number()
        return fill(self.rng, self.choice(PHONE_PATTERNS[profile]))

    # -- cards
    def card(self, brand: str | None = None) -> str:
        brand = brand or self.wchoice(
            [("visa", 4), ("mc", 3), ("mc2", 2), ("amex", 2), ("disc", 1)]
        )
        if brand == "visa":
            num = luhn_complete(self.rng, "4", 16)
        elif brand == "mc":
            num = luhn_complete(self.rng, str(self.rng.randint(51, 55)), 16)
        elif brand == "mc2":
            num = luhn_complete(self.rng, str(self.rng.randint(2221, 2720)), 16)
        elif brand == "amex":
            num = luhn_complete(self.rng, self.choice(["34", "37"]), 15)
        else:
            num = luhn_complete(
                self.rng, self.choice(["6011", "65", str(self.rng.randint(644, 649))]), 16
            )
        sep = self.wchoice([(" ", 5), ("-", 3), ("", 3)])
        if len(num) == 15:
            out = sep.join([num[:4], num[4:10], num[10:]])
        else:
            out = sep.join(num[i : i + 4] for i in range(0, 16, 4))
        assert luhn_ok(out)
        return out

    # -- IBAN
    def iban(self, profile: str | None) -> str:
        if profile in FAKER_IBAN and self.chance(0.8):
            raw = self.fk[FAKER_IBAN[profile]].iban()
        elif self.chance(0.3):
            cc = self.choice(sorted(IBAN_BBAN))
            raw = iban_compose(cc, fill(self.rng, IBAN_BBAN[cc]))
        else:
            raw = self.fk[self.choice(sorted(set(FAKER_IBAN.values())))].iban()
        assert iban_ok(raw), raw
        return group4(raw) if self.chance(0.6) else raw

    # -- US identifiers
    def ssn(self) -> str:
        area = self.rng.randint(1, 899)
        while area == 666:
            area = self.rng.randint(1, 899)
        group, serial = self.rng.randint(1, 99), self.rng.randint(1, 9999)
        sep = self.wchoice([("-", 6), (" ", 3), ("", 1)])
        return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"

    def dl_state(self):
        return self.choice(DL_STATES)

    def dl(self, state) -> str:
        return fill(self.rng, self.choice(state[2]))

    def passport(self) -> str:
        return fill(self.rng, self.choice(["^########", "@########", "^########"]))

    # -- IPs
    def ip4(self) -> str:
        r = self.rng.random()
        o = self.rng.randint
        if r < 0.3:
            net = self.choice(["192.0.2", "198.51.100", "203.0.113"])
            return f"{net}.{o(1, 254)}"
        if r < 0.55:
            return self.choice([f"10.{o(0, 255)}.{o(0, 255)}.{o(1, 254)}", f"192.168.{o(0, 255)}.{o(1, 254)}",
                                f"172.{o(16, 31)}.{o(0, 255)}.{o(1, 254)}"])  # fmt: skip
        first = self.choice([23, 31, 37, 45, 51, 62, 77, 81, 85, 88, 91, 95, 104, 109, 134, 141, 151,
                             176, 178, 185, 188, 193, 195, 212, 213, 217, o(1, 223)])  # fmt: skip
        return f"{first}.{o(0, 255)}.{o(0, 255)}.{o(1, 254)}"

    def ip6(self) -> str:
        o = self.rng.randint
        prefix = self.choice([[0x2001, 0xDB8], [0x2A02, o(0, 0xFFFF)], [0x2600, o(0, 0xFFFF)],
                              [0xFE80, 0], [0x2001, 0x470], [0x2A01, o(0, 0xFFFF)]])  # fmt: skip
        groups = prefix + [o(0, 0xFFFF) for _ in range(6)]
        for i in range(2, 8):
            if self.chance(0.3):
                groups[i] = 0
        if prefix[0] == 0xFE80:
            groups[1:4] = [0, 0, 0]
        addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        style = self.wchoice([("compressed", 6), ("exploded", 2), ("plain", 2)])
        if style == "compressed":
            s = addr.compressed
        elif style == "exploded":
            s = addr.exploded
        else:
            s = ":".join(f"{g:x}" for g in groups)
        return s.upper() if self.chance(0.1) else s

    # -- addresses
    def addr(self, profile: str) -> Addr:
        r = self.rng
        fk = self.fk[FAKER_LOCALE[profile]]
        country = self.choice(COUNTRY_NAMES[profile])
        unit = None
        district = region = None
        zip_prefix = ""
        extra: dict = {}
        if profile == "US":
            if self.chance(0.25):
                main = fk.street_address()
                m = re.match(r"^(.*?) ((?:Apt\.|Suite) \d+)$", main)
                if m:
                    main, unit = m.group(1), m.group(2)
            else:
                num = str(
                    r.choice(
                        [
                            r.randint(1, 99),
                            r.randint(100, 999),
                            r.randint(1000, 9999),
                            r.randint(10000, 99999),
                        ]
                    )
                )
                pre = self.choice(["", "", "", "N ", "W ", "S ", "E ", "NE "])
                main = f"{num} {pre}{self.choice(US_STREET_NAMES)} {self.choice(US_SUFFIXES)}"
                if self.chance(0.3):
                    unit = self.choice([f"Apt. {r.randint(1, 999)}", f"Apt {r.randint(1, 30)}{self.choice('ABCD')}",
                                        f"Suite {r.randint(100, 950)}", f"#{r.randint(1, 40)}", f"Unit {r.randint(1, 60)}",
                                        f"Ste {r.randint(100, 400)}", f"Apt {r.randint(1, 20)}-{self.choice('LR')}"])  # fmt: skip
            if self.chance(0.15):
                city, region = fk.city(), fk.state_abbr(include_territories=False)
            else:
                city, region = self.choice(US_CITIES)
            zipc = f"{r.randint(501, 99950):05d}"
            if self.chance(0.15):
                zipc += f"-{r.randint(0, 9999):04d}"
            extra["state_name"] = US_STATE_NAMES.get(region, region)
        elif profile == "UK":
            num = str(r.randint(1, 240))
            main = f"{num} {self.choice(UK_STREET_NAMES)} {self.choice(UK_TYPES)}"
            if self.chance(0.25):
                main = self.choice([f"Flat {r.randint(1, 30)}, ", f"Flat {r.randint(1, 9)}{self.choice('ABC')}, ",
                                    f"Apartment {r.randint(1, 120)}, "]) + main  # fmt: skip
            elif self.chance(0.08):
                main = f"{self.choice(UK_HOUSE_NAMES)}, {main}"
            city = self.choice(UK_TOWNS)
            if self.chance(0.3):
                city = city.upper()
            if self.chance(0.15):
                district = self.choice(UK_DISTRICTS)
            zipc = fk.postcode()
        elif profile in ("DE", "AT", "CH"):
            main = f"{fk.street_name()} {r.randint(1, 180)}{self.choice(['', '', '', 'a', 'b'])}"
            if profile == "AT" and self.chance(0.5):
                main += f"/{r.randint(1, 20)}"
            if profile == "DE" and self.chance(0.1):
                main += self.choice([", 3. OG", " (Hinterhaus)", ", App. 12"])
            city, zipc = fk.city(), fk.postcode()
            if profile == "CH" and self.chance(0.3):
                zip_prefix = "CH-"
            if profile == "DE" and self.chance(0.08):
                zip_prefix = "D-"
        elif profile == "NL":
            main = f"{fk.street_name()} {r.randint(1, 250)}{self.choice(['', '', '', 'A', '-2', '-III', ' bis', ' hs'])}"
            pc = fk.postcode().replace(" ", "")
            zipc = f"{pc[:4]} {pc[4:]}" if self.chance(0.7) else pc
            city = fk.city()
        elif profile == "FI":
            main = f"{fk.street_name()} {r.randint(1, 90)}{self.choice(['', '', f' A {r.randint(1, 40)}', f' B {r.randint(1, 40)}', f' as. {r.randint(1, 30)}'])}"
            city, zipc = fk.city(), fk.postcode()
        elif profile == "SE":
            main = f"{fk.street_name()} {r.randint(1, 90)}{self.choice(['', '', f', lgh {r.randint(1001, 1304)}', ' 2 tr'])}"
            zipc = f"{r.randint(100, 985)} {r.randint(0, 99):02d}"
            city = fk.city()
        elif profile == "DK":
            main = f"{fk.street_name()} {r.randint(1, 160)}{self.choice(['', ', 2. tv', ', st. th.', ', 1. mf.'])}"
            city, zipc = fk.city(), fk.postcode()
        elif profile == "PL":
            pre = self.wchoice([("ul. ", 7), ("al. ", 1), ("", 2)])
            main = f"{pre}{fk.street_name()} {r.randint(1, 200)}{self.choice(['', '', f'/{r.randint(1, 80)}', f' m. {r.randint(1, 60)}'])}"
            city, zipc = fk.city(), fk.postcode()
        elif profile == "CZ":
            main = f"{fk.street_name()} {r.randint(1, 2999)}{self.choice(['', f'/{r.randint(1, 80)}'])}"
            city = fk.city()
            zipc = f"{r.randint(100, 799)} {r.randint(0, 99):02d}"
        elif profile == "FR":
            num = str(r.randint(1, 180)) + self.choice(["", "", "", " bis", " ter"])
            sep = self.choice([", ", " "])
            main = f"{num}{sep}{self.choice(FR_TYPES)} {self.choice(FR_STREETS)}"
            if self.chance(0.2):
                unit = self.choice([f"Appartement {r.randint(1, 60)}", f"Bât. {self.choice('ABCD')}, {r.randint(1, 7)}e étage",
                                    f"Résidence Les Tilleuls, escalier {self.choice('ABC')}"])  # fmt: skip
            city, zipc = self.choice(FR_CITIES), fk.postcode()
            if self.chance(0.25):
                city = city.upper()
        elif profile == "ES":
            main = f"{fk.street_name()}, {r.randint(1, 160)}"
            if self.chance(0.5):
                main += self.choice(
                    [
                        ", 3º B",
                        ", 2º izq.",
                        ", bajo",
                        f", piso {r.randint(1, 9)}, puerta {r.randint(1, 4)}",
                        ", 1º 2ª",
                    ]
                )
            city, zipc = self.choice(ES_CITIES), fk.postcode()
        elif profile == "IT":
            main = f"{self.choice(IT_TYPES)} {self.choice(IT_STREETS) if self.chance(0.7) else fk.last_name()}, {r.randint(1, 200)}"
            if self.chance(0.15):
                main += self.choice(["/A", " int. 5", ", scala B"])
            city, region = self.choice(IT_CITIES)
            zipc = fk.postcode()
            if self.chance(0.4):
                region = None
        elif profile == "BR":
            main = f"{self.choice(BR_TYPES)} {self.choice(BR_STREETS)}, {r.randint(10, 3999)}"
            if self.chance(0.5):
                main += self.choice([f" - apto {r.randint(11, 190)}", f", apto {r.randint(101, 1804)}", f", casa {r.randint(1, 9)}",
                                     f", bloco {self.choice('ABC')}, apto {r.randint(101, 404)}", f" - sala {r.randint(101, 1200)}"])  # fmt: skip
            district = self.choice(BR_BAIRROS) if self.chance(0.6) else fk.bairro()
            city, region = self.choice(BR_CITIES)
            zipc = fill(r, self.choice(["#####-###", "#####-###", "########"]))
        elif profile == "JP":
            town, ward, pref = self.choice(JP_PLACES)
            main = f"{r.randint(1, 7)}-{r.randint(1, 30)}-{r.randint(1, 20)} {town}"
            if self.chance(0.35):
                main = f"{self.choice(JP_BUILDINGS)} {r.randint(1, 12)}0{r.randint(1, 9)}, {main}"
            city, region = ward, pref
            zipc = fill(r, "###-####")
        elif profile == "IN":
            city, region, pin3, areas = self.choice(IN_PLACES)
            pre = self.choice(["No. ", "#", "Flat ", "H.No. ", "Plot ", ""])
            main = f"{pre}{r.randint(1, 450)}, {self.choice(IN_ROADS)}"
            if self.chance(0.3):
                main = f"Flat {r.randint(1, 12)}0{r.randint(1, 9)}, {self.choice(IN_BUILDINGS)}, {self.choice(IN_ROADS)}"
            district = self.choice(areas)
            pin = f"{pin3}{r.randint(1, 99):03d}"
            zipc = f"{pin[:3]} {pin[3:]}" if self.chance(0.15) else pin
        elif profile == "TR":
            il, ilce, code = self.choice(TR_PLACES)
            kind = self.choice(["Cad.", "Sok.", "Sk.", "Caddesi", "Bulvarı"])
            main = f"{self.choice(TR_MAHALLE)} Mah. {self.choice(TR_STREETS)} {kind} No: {r.randint(1, 200)}"
            if self.chance(0.6):
                main += f" D: {r.randint(1, 30)}"
            if self.chance(0.3):
                main = main.replace("No: ", "No:").replace("D: ", "D:")
            city, district = il, ilce
            zipc = f"{code}{r.randint(0, 999):03d}"
        elif profile == "CA":
            city, region, letter = self.choice(CA_CITIES)
            if region == "QC" and self.chance(0.7):
                main = f"{r.randint(10, 9999)}, {self.choice(['rue', 'boulevard', 'avenue'])} {self.choice(CA_FR_STREETS)}"
                if self.chance(0.4):
                    main += f", app. {r.randint(1, 40)}"
            else:
                main = f"{r.randint(10, 9999)} {self.choice(US_STREET_NAMES)} {self.choice(US_SUFFIXES)}"
                if self.chance(0.25):
                    main = f"{r.randint(100, 2500)}-" + main
            ca = "ABCEGHJKLMNPRSTVWXYZ"  # letters Canada Post uses
            pc = f"{letter}{r.randint(0, 9)}{r.choice(ca)} {r.randint(0, 9)}{r.choice(ca)}{r.randint(0, 9)}"
            zipc = pc if self.chance(0.85) else pc.replace(" ", "")
        elif profile == "AU":
            suburb, region, zipc = self.choice(AU_PLACES)
            street = f"{self.choice(AU_STREETS)} {self.choice(AU_TYPES)}"
            n = r.randint(1, 300)
            main = self.choice(
                [
                    f"{n} {street}",
                    f"{r.randint(1, 30)}/{n} {street}",
                    f"Unit {r.randint(1, 30)}, {n} {street}",
                ]
            )
            city = suburb
        elif profile == "IE":
            town, county, key = self.choice(IE_PLACES)
            main = self.choice([f"{r.randint(1, 120)} {self.choice(IE_STREETS)}",
                                f"Apartment {r.randint(1, 80)}, The Granary, {self.choice(IE_STREETS)}"])  # fmt: skip
            city, region = town, county
            zipc = f"{key} {''.join(r.choice(EIRCODE_CHARS) for _ in range(4))}"
        else:
            raise KeyError(profile)
        if unit and profile == "FR":
            street, unit_line = f"{unit}, {main}", unit  # French: unit line before the street line
        elif unit:
            street = f"{main}{self.choice([' ', ', '])}{unit}"
            unit_line = (
                unit if self.chance(0.5) else None
            )  # a block may put the unit on its own line
        else:
            street, unit_line = main, None
        if unit_line is None:
            main = street
        return Addr(
            profile,
            street,
            main,
            unit_line,
            district,
            city,
            region,
            zipc,
            country,
            zip_prefix,
            extra,
        )

    # -- Japanese-script postal block (Faker ja_JP)
    def ja_block(self) -> list[tuple[str, str | None]]:
        f = self.fk["ja_JP"]
        pieces: list[tuple[str, str | None]] = [
            ("〒", None),
            (f.zipcode(), "ZIP_CODE"),
            ("\n", None),
        ]
        pieces += [(f.prefecture(), "LOCATION"), (f.city(), "LOCATION")]
        street = f.town() + f.chome() + f.ban() + f.gou()
        if self.chance(0.5):
            street += f" {f.building_name()}{self.rng.randint(1, 12)}0{self.rng.randint(1, 9)}号室"
        pieces.append((street, "STREET_ADDRESS"))
        return pieces


S, Z, L = "STREET_ADDRESS", "ZIP_CODE", "LOCATION"


def addr_pieces(g: Gen, a: Addr, block: bool) -> list[tuple[str, str | None]]:
    """The postal address as pieces; STREET / ZIP / LOCATION spans, separators unlabelled."""
    nl = "\n" if block else ", "
    p: list[tuple[str, str | None]] = []

    def street_part():
        if block and a.unit_line:
            if a.kind == "FR":
                p.extend([(a.unit_line, S), ("\n", None), (a.street_main, S)])
            else:
                p.extend([(a.street_main, S), ("\n", None), (a.unit_line, S)])
        else:
            p.append((a.street, S))

    def country(prob: float):
        if g.chance(prob):
            p.extend([(nl, None), (a.country, L)])

    k = a.kind
    street_part()
    if k == "US":
        p.extend(
            [
                (nl, None),
                (a.city, L),
                (", ", None),
                (a.region, L),
                (g.choice([" ", "  "]) if block else " ", None),
                (a.zip, Z),
            ]
        )
        country(0.15 if block else 0.05)
    elif k == "CA":
        sep = ", " if not block or g.chance(0.4) else " "
        p.extend(
            [
                (nl, None),
                (a.city, L),
                (sep, None),
                (a.region, L),
                (g.choice([" ", "  "]), None),
                (a.zip, Z),
            ]
        )
        country(0.2 if block else 0.05)
    elif k == "UK":
        if a.district and block:
            p.extend([(nl, None), (a.district, L)])
        if block:
            p.extend([(nl, None), (a.city, L), (nl, None), (a.zip, Z)])
        else:
            p.extend([(nl, None), (a.city, L), (g.choice([" ", ", "]), None), (a.zip, Z)])
        country(0.2 if block else 0.05)
    elif k == "BR":
        if a.district:
            p.extend([(nl if block else " - ", None), (a.district, L)])
        p.extend(
            [(nl, None), (a.city, L), (g.choice([" - ", "/", " \u2013 "]), None), (a.region, L)]
        )
        if block:
            p.extend([("\nCEP ", None), (a.zip, Z)])
        else:
            p.extend([(", CEP " if g.chance(0.5) else ", ", None), (a.zip, Z)])
        country(0.2 if block else 0.05)
    elif k == "JP":
        p.extend([(nl, None), (a.city, L), (", ", None), (a.region, L), (" ", None), (a.zip, Z)])
        country(0.2 if block else 0.05)
    elif k == "IN":
        p.extend(
            [
                (nl, None),
                (a.district, L),
                (nl, None),
                (a.city, L),
                (g.choice([" - ", " ", "-"]), None),
                (a.zip, Z),
            ]
        )
        if g.chance(0.5 if block else 0.25):
            p.extend([(nl if block else ", ", None), (a.region, L)])
        country(0.2 if block else 0.05)
    elif k == "TR":
        p.extend(
            [
                (nl, None),
                (a.zip, Z),
                (" ", None),
                (a.district, L),
                (g.choice(["/", " / "]), None),
                (a.city, L),
            ]
        )
        country(0.2 if block else 0.05)
    elif k == "AU":
        p.extend([(nl, None), (a.city, L), (" ", None), (a.region, L), (" ", None), (a.zip, Z)])
        country(0.2 if block else 0.05)
    elif k == "IE":
        p.extend(
            [(nl, None), (a.city, L), (nl + "Co. ", None), (a.region, L), (nl, None), (a.zip, Z)]
        )
        country(0.2 if block else 0.05)
    else:  # postal code before city: DE AT CH NL FI SE DK PL CZ FR ES IT
        p.append((nl, None))
        if a.zip_prefix:
            p.append((a.zip_prefix, None))
        p.extend(
            [
                (a.zip, Z),
                (g.choice([" ", " ", "  "]) if block and k == "NL" else " ", None),
                (a.city, L),
            ]
        )
        if k == "IT" and a.region:
            p.extend([(" (", None), (a.region, L), (")", None)])
        country(0.2 if block else 0.05)
    return p


ALIASES = {"TICKET2": "TICKET", "TICKET3": "TICKET", "SHA2": "SHA", "HASH7B": "HASH7", "SKU2": "SKU",
           "HOST2": "HOST", "DATE2": "DATE", "PCT2": "PCT", "ORDER2": "ORDER", "AMOUNT2": "AMOUNT",
           "PRODUCT2": "PRODUCT", "VERSION2": "VERSION", "NUM2": "NUM", "ZIPLIKE2": "ZIPLIKE"}  # fmt: skip


def nonpii(g: Gen, key: str) -> str:
    r = g.rng
    base = ALIASES.get(key, key)
    y = r.randint(2019, 2025)
    if base == "ORDER":
        return g.choice([f"ORD-{y}-{r.randint(100000, 999999)}", f"#{r.randint(10000, 999999)}",
                         fill(r, "@@-#######"), fill(r, "SO########"), fill(r, "@@@-####-@@")])  # fmt: skip
    if base == "TICKET":
        return g.choice([f"#{r.randint(10000, 99999)}", fill(r, "TCK-#####"), fill(r, "INC00#####"),
                         f"{g.choice(['PLAT', 'OPS', 'WEB', 'BILL', 'SUP'])}-{r.randint(100, 9999)}", fill(r, "CS-######")])  # fmt: skip
    if base == "INVOICE":
        return g.choice([fill(r, "INV 000#####"), f"INV-{y}-{r.randint(1, 9999):04d}", f"{y}/{r.randint(1, 9999):04d}",
                         fill(r, "RE-######")])  # fmt: skip
    if base == "AMOUNT":
        return g.choice([f"${r.randint(1, 9)},{r.randint(0, 999):03d}.00", f"€{r.randint(5, 999)},{r.randint(0, 99):02d}",
                         f"£{r.randint(1, 300)}.{r.randint(0, 99):02d}", f"USD {r.randint(1, 9)},{r.randint(100, 999)}",
                         f"¥{r.randint(1, 99)},{r.randint(100, 999)}", f"R$ {r.randint(10, 999)},{r.randint(0, 99):02d}",
                         f"{r.randint(1, 9)}.{r.randint(100, 999)},00 €", f"CHF {r.randint(10, 900)}.\u2013", f"₹{r.randint(1, 99)},{r.randint(100, 999)}",
                         f"${r.randint(0, 99)}.{r.randint(0, 99):02d}", f"{r.randint(10, 900)},{r.randint(0, 99):02d} zł",
                         f"{r.randint(50, 5000)} kr"])  # fmt: skip
    if base == "PRICE":
        return f"{r.randint(1, 400)}.{r.randint(0, 99):02d}"
    if base == "VERSION":
        return g.choice([f"v{r.randint(1, 9)}.{r.randint(0, 30)}.{r.randint(0, 20)}", f"{r.randint(1, 4)}.{r.randint(0, 12)}.{r.randint(0, 9)}",
                         f"{r.randint(1, 3)}.0.0-rc.{r.randint(1, 5)}", f"v{r.randint(2, 12)}.{r.randint(0, 9)}", f"{y}.{r.randint(1, 4)}.{r.randint(0, 9)}"])  # fmt: skip
    if base == "VERSION4":
        return g.choice([f"{r.randint(1, 9)}.{r.randint(0, 12)}.{r.randint(0, 99)}.{r.randint(0, 999)}", f"10.0.{r.randint(17000, 22631)}.{r.randint(1, 4000)}",
                         f"6.3.9600.{r.randint(10000, 21000)}", f"1.3.6.1.4.1.{r.randint(1, 60000)}"])  # fmt: skip
    if base == "BUILD":
        return g.choice(
            [
                f"{y}{r.randint(1, 12):02d}{r.randint(1, 28):02d}.{r.randint(1, 20)}",
                str(r.randint(1000, 99999)),
                f"{r.randint(1, 9)}.{r.randint(100, 9999)}",
            ]
        )
    if base == "UUID":
        return str(uuid.UUID(int=r.getrandbits(128), version=4))
    if base == "HASH":
        return f"{r.getrandbits(160):040x}"
    if base == "SHA":
        return f"{r.getrandbits(256):064x}"
    if base == "HASH7":
        return f"{r.getrandbits(28):07x}"
    if base == "TS":
        mo, d, h, mi, s = (
            r.randint(1, 12),
            r.randint(1, 28),
            r.randint(0, 23),
            r.randint(0, 59),
            r.randint(0, 59),
        )
        return g.choice([f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z", f"{y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d},{r.randint(0, 999):03d}",
                         f"{MONTHS[mo - 1][:3]} {d:2d} {h:02d}:{mi:02d}:{s:02d}", f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{r.randint(0, 999999):06d}+00:00"])  # fmt: skip
    if base == "CLF_TS":
        return f"{r.randint(1, 28):02d}/{g.choice(MONTHS)[:3]}/{y}:{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} +0000"
    if base == "DATE":
        mo, d = r.randint(1, 12), r.randint(1, 28)
        return g.choice([f"{d} {MONTHS[mo - 1]} {y}", f"{y}-{mo:02d}-{d:02d}", f"{mo:02d}/{d:02d}/{y}", f"{d:02d}.{mo:02d}.{y}",
                         f"{MONTHS[mo - 1]} {d}", f"{d} {MONTHS[mo - 1][:3]}"])  # fmt: skip
    if base == "TIME":
        return g.choice(
            [
                f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}",
                f"{r.randint(1, 12)}:{r.randint(0, 5)}0 {g.choice(['am', 'pm'])}",
            ]
        )
    if base == "ERR":
        return g.choice(ERRORS)
    if base == "PORT":
        return str(
            g.choice(
                [
                    8080,
                    5432,
                    443,
                    6379,
                    9200,
                    3306,
                    22,
                    27017,
                    8443,
                    5672,
                    9092,
                    r.randint(1024, 65535),
                ]
            )
        )
    if base == "PATH":
        return g.choice(PATHS)
    if base == "SKU":
        return g.choice([f"SKU-{r.randint(10000, 99999)}-{g.choice(COLORS)}-{g.choice(['S', 'M', 'L', 'XL'])}",
                         fill(r, "@@-####-@"), fill(r, "@@@####")])  # fmt: skip
    if base == "TRACK":
        return g.choice([fill(r, "1Z******##########"), fill(r, "#### #### ####"), fill(r, "@@#########GB"),
                         fill(r, "3S@@@@#######"), fill(r, "JJD00##############")])  # fmt: skip
    if base == "TRACK_USPS":
        return fill(r, "9400 1### #### #### #### ##")
    if base == "ISBN":
        body = "978" + fill(r, "#########")
        check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
        a = r.randint(1, 2)
        b = r.randint(2, 5)
        return f"{body[:3]}-{body[3 : 3 + a]}-{body[3 + a : 3 + a + b]}-{body[3 + a + b :]}-{check}"
    if base == "PCT":
        return g.choice(
            [
                f"{r.randint(1, 40)}.{r.randint(0, 9)}%",
                f"{r.randint(90, 99)}.{r.randint(10, 99)}%",
                f"{r.randint(1, 25)}%",
                f"0.{r.randint(1, 9)} %",
            ]
        )
    if base == "QTY":
        return str(r.randint(1, 40))
    if base == "NUM":
        return str(r.randint(100, 999999))
    if base == "NUM9":
        return fill(r, "#########")
    if base == "ZIPLIKE":
        return fill(r, "^####")
    if base == "PRODUCT":
        return g.choice(PRODUCTS)
    if base == "COMPANY":
        return g.choice(COMPANIES)
    if base == "MODEL":
        return g.choice(MODELS)
    if base == "HOST":
        return g.choice(HOSTS)
    if base == "URL":
        return g.choice(URLS)
    if base == "WEEKDAY":
        return g.choice(WEEKDAYS)
    if base == "MONTH":
        return g.choice(MONTHS)
    if base == "SERIAL":
        return fill(r, g.choice(["C02**********", "SN-########", "**##-****-####"]))
    if base == "FLIGHT":
        return g.choice(FLIGHTS)
    raise KeyError(key)


# label of each single-valued PII placeholder
PII_KEYS = {
    "NAME": "PERSON", "FIRST": "PERSON", "LAST": "PERSON", "NAME2": "PERSON", "FIRST2": "PERSON",
    "LAST2": "PERSON", "NAME3": "PERSON", "FIRST3": "PERSON", "ILAST": "PERSON", "JA_NAME": "PERSON",
    "EMAIL": "EMAIL_ADDRESS", "EMAIL2": "EMAIL_ADDRESS", "EMAIL_ANY": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER", "PHONE2": "PHONE_NUMBER", "PHONE3": "PHONE_NUMBER",
    "CARD": "CREDIT_CARD", "CARD_AMEX": "CREDIT_CARD", "CARD_MC": "CREDIT_CARD", "CARD_VISA": "CREDIT_CARD",
    "CARD_DISC": "CREDIT_CARD", "IBAN": "IBAN_CODE", "IBAN2": "IBAN_CODE", "SSN": "US_SSN",
    "IP": "IP_ADDRESS", "IP4": "IP_ADDRESS", "IP4B": "IP_ADDRESS", "IP6": "IP_ADDRESS",
    "STREET": "STREET_ADDRESS", "STREET2": "STREET_ADDRESS", "ZIP": "ZIP_CODE", "ZIP2": "ZIP_CODE",
    "CITY": "LOCATION", "CITY2": "LOCATION", "REGION": "LOCATION", "STATE": "LOCATION",
    "COUNTRY": "LOCATION", "COUNTRY2": "LOCATION", "DL_STATE": "LOCATION", "DL_ST": "LOCATION",
    "DL": "US_DRIVER_LICENSE", "PASSPORT": "US_PASSPORT",
}  # fmt: skip
BLOCK_KEYS = {"ADDR_BLOCK", "ADDR_LINE", "ADDR2_BLOCK", "ADDR2_LINE", "JA_BLOCK"}
# expected span counts of the composite placeholders (used only to balance template choice)
BLOCK_VEC = {"STREET_ADDRESS": 1.1, "ZIP_CODE": 1.0, "LOCATION": 1.8}

PH = re.compile(r"\{([A-Z][A-Z0-9_]*?)(_lc|_uc)?\}")


@dataclass(frozen=True)
class T:
    shape: str
    text: str
    only: tuple[str, ...] | None = None


class Row:
    """One rendered row: lazily creates persons/addresses so repeated placeholders agree."""

    def __init__(self, g: Gen, t: T) -> None:
        self.g = g
        self.t = t
        keys = set(PH.findall(t.text))
        names = {k for k, _ in keys}
        only = t.only
        if only is None and names & {"SSN", "DL", "DL_STATE", "DL_ST", "PASSPORT", "STATE"}:
            only = ("US",)
        self.profile = g.profile(only)
        self.profile2 = g.profile()
        self.cache: dict[str, list[tuple[str, str | None]]] = {}
        self._p: dict[int, Person] = {}
        self._a: dict[int, Addr] = {}
        self._dl = None

    def person(self, i: int) -> Person:
        if i not in self._p:
            prof = (
                self.profile if i == 1 else (self.profile if self.g.chance(0.5) else self.profile2)
            )
            self._p[i] = self.g.person(prof)
        return self._p[i]

    def address(self, i: int) -> Addr:
        if i not in self._a:
            self._a[i] = self.g.addr(self.profile if i == 1 else self.profile2)
        return self._a[i]

    def dlstate(self):
        if self._dl is None:
            self._dl = self.g.dl_state()
        return self._dl

    def single(self, key: str) -> str:
        g = self.g
        if key in ("NAME", "NAME2", "NAME3"):
            return self.person({"NAME": 1, "NAME2": 2, "NAME3": 3}[key]).full
        if key in ("FIRST", "FIRST2", "FIRST3"):
            return self.person({"FIRST": 1, "FIRST2": 2, "FIRST3": 3}[key]).first
        if key in ("LAST", "LAST2"):
            return self.person(1 if key == "LAST" else 2).last
        if key == "ILAST":
            p = self.person(1)
            return f"{p.first[0]}. {p.last}"
        if key == "JA_NAME":
            return g.fk["ja_JP"].name()
        if key == "EMAIL":
            return g.email_for(self.person(1), self.profile)
        if key == "EMAIL2":
            return g.email_for(self.person(2), self.profile2)
        if key == "EMAIL_ANY":
            return g.email_any()
        if key == "PHONE":
            return g.phone(self.profile)
        if key in ("PHONE2", "PHONE3"):
            return g.phone(self.profile2 if key == "PHONE2" else g.profile())
        if key.startswith("CARD"):
            brand = {
                "CARD": None,
                "CARD_AMEX": "amex",
                "CARD_MC": g.choice(["mc", "mc2"]),
                "CARD_VISA": "visa",
                "CARD_DISC": "disc",
            }[key]
            return g.card(brand)
        if key == "IBAN":
            return g.iban(self.profile)
        if key == "IBAN2":
            return g.iban(self.profile2)
        if key == "SSN":
            return g.ssn()
        if key == "IP":
            return g.ip6() if g.chance(0.3) else g.ip4()
        if key in ("IP4", "IP4B"):
            return g.ip4()
        if key == "IP6":
            return g.ip6()
        if key in ("STREET", "STREET2"):
            return self.address(1 if key == "STREET" else 2).street
        if key in ("ZIP", "ZIP2"):
            return self.address(1 if key == "ZIP" else 2).zip
        if key in ("CITY", "CITY2"):
            a = self.address(1 if key == "CITY" else 2)
            return a.district if a.kind == "TR" and g.chance(0.3) else a.city
        if key == "REGION":
            a = self.address(1)
            return a.region or a.country
        if key == "STATE":
            a = self.address(1)
            return a.extra.get("state_name", a.region or a.country)
        if key in ("COUNTRY", "COUNTRY2"):
            return self.address(1 if key == "COUNTRY" else 2).country
        if key == "DL_STATE":
            return self.dlstate()[0]
        if key == "DL_ST":
            return self.dlstate()[1]
        if key == "DL":
            return g.dl(self.dlstate())
        if key == "PASSPORT":
            return g.passport()
        raise KeyError(key)

    def value(self, key: str) -> list[tuple[str, str | None]]:
        if key in self.cache:
            return self.cache[key]
        if key in PII_KEYS:
            pieces = [(self.single(key), PII_KEYS[key])]
        elif key in ("ADDR_BLOCK", "ADDR_LINE"):
            pieces = addr_pieces(self.g, self.address(1), key == "ADDR_BLOCK")
        elif key in ("ADDR2_BLOCK", "ADDR2_LINE"):
            pieces = addr_pieces(self.g, self.address(2), key == "ADDR2_BLOCK")
        elif key == "JA_BLOCK":
            pieces = self.g.ja_block()
        else:
            pieces = [(nonpii(self.g, key), None)]
        self.cache[key] = pieces
        return pieces

    def render(self) -> tuple[str, list[list]]:
        parts: list[tuple[str, str | None]] = []
        pos = 0
        text = self.t.text
        for m in PH.finditer(text):
            parts.append((text[pos : m.start()], None))
            case = m.group(2)
            for val, lab in self.value(m.group(1)):
                if case == "_lc":
                    val = val.lower()
                elif case == "_uc":
                    val = val.upper()
                parts.append((val, lab))
            pos = m.end()
        parts.append((text[pos:], None))
        out = ""
        spans: list[list] = []
        inserted: list[str] = []
        for val, lab in parts:
            if lab is not None:
                assert val and val == val.strip(), (self.t.text, val)
                spans.append([len(out), len(out) + len(val), lab])
                inserted.append(val)
            out += val
        for (a, b, _), val in zip(spans, inserted, strict=True):
            assert out[a:b] == val, (out, a, b, val)
        return out, spans


def template_vector(t: T) -> Counter:
    vec: Counter = Counter()
    for key, _ in PH.findall(t.text):
        if key in PII_KEYS:
            vec[PII_KEYS[key]] += 1
        elif key in BLOCK_KEYS:
            for k, v in BLOCK_VEC.items():
                vec[k] += v
    return vec


# share of spans each type should get (balancing target for template choice)
TARGET = {
    "PERSON": 0.175, "STREET_ADDRESS": 0.15, "LOCATION": 0.09, "EMAIL_ADDRESS": 0.085,
    "PHONE_NUMBER": 0.09, "ZIP_CODE": 0.075, "CREDIT_CARD": 0.065, "IBAN_CODE": 0.06,
    "IP_ADDRESS": 0.065, "US_SSN": 0.055, "US_DRIVER_LICENSE": 0.04, "US_PASSPORT": 0.035,
}  # fmt: skip


def build(name: str, templates: list[T]) -> list[dict]:
    g = Gen(SEEDS[name])
    pos = [t for t in templates if t.shape != "hard_negative"]
    neg = [t for t in templates if t.shape == "hard_negative"]
    n = ROWS[name]
    n_neg = round(n * HARD_NEGATIVE_SHARE)
    plan = ["neg"] * n_neg + ["pos"] * (n - n_neg)
    g.rng.shuffle(plan)
    vecs = {t: template_vector(t) for t in pos}
    cap = -(-2 * (n - n_neg) // len(pos))  # no template renders more than ~2x the mean
    uses: Counter = Counter()
    counts: Counter = Counter()
    first_pass = pos[:]
    g.rng.shuffle(first_pass)
    neg_order: list[T] = []
    rows = []
    seen_text = set()
    for i, kind in enumerate(plan):
        if kind == "neg":
            if not neg_order:
                neg_order = neg[:]
                g.rng.shuffle(neg_order)
            t = neg_order.pop()
        elif first_pass:
            t = first_pass.pop()
        else:
            # greedy balancing: prefer templates whose span types are furthest below TARGET
            total = sum(counts.values()) + 1
            need = {k: (TARGET[k] * total - counts[k]) / (TARGET[k] * total) for k in TYPES}
            best = None
            for t_ in pos:
                if uses[t_] >= cap:
                    continue
                vec = vecs[t_]
                s = sum(need[k] * v for k, v in vec.items()) / sum(vec.values()) ** 0.5
                s += 0.25 * g.rng.random() - 0.02 * uses[t_]
                if best is None or s > best[0]:
                    best = (s, t_)
            t = best[1]
        for _attempt in range(50):
            text, spans = Row(g, t).render()
            if text not in seen_text:
                break
            if kind == "neg":  # a literal-heavy negative came out the same: try another one
                t = g.choice(neg)
        else:
            raise AssertionError(f"cannot render a new row from {t.text!r}")
        seen_text.add(text)
        uses[t] += 1
        for _, _, lab in spans:
            counts[lab] += 1
        prefix = "d" if name == "dev" else "t"
        rows.append({"id": f"{prefix}-{i + 1:04d}", "text": text, "spans": spans, "shape": t.shape})
    return rows


def validate(rows: list[dict]) -> Counter:
    counts: Counter = Counter()
    ids = set()
    for row in rows:
        assert row["id"] not in ids
        ids.add(row["id"])
        text, spans = row["text"], row["spans"]
        assert spans == sorted(spans), row
        end = 0
        for a, b, lab in spans:
            assert lab in TYPES, lab
            assert 0 <= end <= a < b <= len(text), row  # sorted, non-overlapping, in bounds
            end = b
            v = text[a:b]
            assert v == v.strip() and v, row
            if lab == "CREDIT_CARD":
                assert luhn_ok(v) and len(re.sub(r"\D", "", v)) in (15, 16), v
            elif lab == "IBAN_CODE":
                assert iban_ok(v), v
            elif lab == "US_SSN":
                d = re.sub(r"\D", "", v)
                assert (
                    len(d) == 9
                    and d[:3] not in ("000", "666")
                    and d[0] != "9"
                    and d[3:5] != "00"
                    and d[5:] != "0000"
                ), v
            elif lab == "IP_ADDRESS":
                ipaddress.ip_address(v)
            elif lab == "EMAIL_ADDRESS":
                assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", v, re.I), v
            counts[lab] += 1
        if row["shape"] == "hard_negative":
            assert not spans, row
    return counts


# --------------------------------------------------------------------------------------------
# hand-written templates. TEST and DEV share no sentence; placeholders are {KEY}, {KEY_lc},
# {KEY_uc}. Only the PII keys (PII_KEYS, *_BLOCK, *_LINE) produce spans; every other key is a
# non-PII distractor (order ids, versions, amounts, ...).
# --------------------------------------------------------------------------------------------

# fmt: off
ZIP_FIRST = ("DE", "AT", "CH", "NL", "FI", "SE", "DK", "PL", "CZ", "FR", "ES", "IT")
HAS_REGION = ("US", "CA", "AU", "IN", "BR", "JP", "IE")
US = ("US",)

TEST_TEMPLATES: list[T] = [
    # chat, normal case
    T("chat", "hi, I ordered the {PRODUCT} last week (order {ORDER}) and it never arrived. can you send it to {STREET}, {CITY} instead? thanks, {FIRST}"),
    T("chat", "Sure, my SSN is {SSN}. Is that all you need?"),
    T("chat", "Agent {FIRST2}: Could you confirm the card number?\nCustomer: {CARD}, expiry 09/27"),
    T("chat", "[{TIME}] {FIRST}: the VPN keeps dropping, my IP shows as {IP4}\n[{TIME}] support: thanks, checking"),
    T("chat", "Can someone from billing ping {NAME}? She's waiting on a refund of {AMOUNT} to {IBAN}."),
    T("chat", "@{FIRST2} can you whitelist {IP4} and {IP4B} for the {PRODUCT} trial? -{FIRST}"),
    T("chat", "You can WhatsApp me on {PHONE2} while I'm abroad, my usual number {PHONE} won't work there."),
    T("chat", "my home IPv6 is {IP6}, can you add it to the allowlist? the office one is {IP4}"),
    T("chat", "ok here it is: {SSN}. please don't store it anywhere weird"),
    T("chat", "I can upload a copy of my driver's license — number {DL}, issued in {DL_STATE}."),
    T("chat", "passport number is {PASSPORT} and I'm flying out of {CITY} on {WEEKDAY}"),
    T("chat", "Hi! I think you have the wrong {LAST} on file — I'm {NAME}, not {NAME2}."),
    T("chat", "Moving next month! New place is {STREET}, {CITY}. Same phone though: {PHONE}"),
    T("chat", "Quick q: was the Amex {CARD_AMEX} the card I used for {ORDER}? the statement looks off"),
    T("chat", "Customer: I need the refund to go to a different account\nAgent: Of course, which IBAN?\nCustomer: {IBAN}"),
    # chat, lower case / sloppy
    T("chat_lowercase", "hey its {NAME_lc}... my card got charged twice, the number is {CARD}"),
    T("chat_lowercase", "my name is {NAME_lc} and my email is {EMAIL}, pls reset my password"),
    T("chat_lowercase", "ask for {FIRST_lc} when you get to the front desk, or call {PHONE}"),
    T("chat_lowercase", "can u update my address to {STREET_lc} {ZIP} {CITY_lc}", ZIP_FIRST),
    T("chat_lowercase", "this is {FIRST_lc} from {CITY_lc}, the package for order {ORDER} was left at the wrong door"),
    T("chat_lowercase", "lol ok {FIRST2_lc}... wait is ur number still {PHONE}?"),
    T("chat_lowercase", "nvm found it. its {EMAIL} not the gmail one"),
    T("chat_lowercase", "im at {STREET_lc} now, where r u"),
    T("chat_lowercase", "send the invoice to {FIRST_lc}.. she handles {COMPANY_lc}'s payments"),
    T("chat_lowercase", "yo {FIRST_lc} its {FIRST2_lc}, new number {PHONE}"),
    T("chat_lowercase", "card is {CARD} and billing zip {ZIP}", ("US",)),
    T("chat_lowercase", "ssn {SSN} dob on file. can you unlock the account", US),
    T("chat_lowercase", "my ip is {IP} if that helps, getting {ERR} every time"),
    T("chat_lowercase", "tell {NAME_lc} the keys are with the neighbour at {STREET_lc}"),
    # e-mail signatures
    T("email_signature", "Hi {FIRST2},\n\nPlease find the signed contract attached.\n\nBest regards,\n{NAME}\nHead of Procurement, {COMPANY}\n{ADDR_BLOCK}\nTel. {PHONE}\n{EMAIL}"),
    T("email_signature", "Thanks so much,\n{FIRST}\n\n--\n{NAME} | Customer Success\nM: {PHONE}  E: {EMAIL}"),
    T("email_signature", "Cheers,\n{ILAST}\n{COMPANY} · {ADDR_LINE}\n{PHONE}"),
    T("email_signature", "Mit freundlichen Grüßen\n\n{NAME}\n{ADDR_BLOCK}\nTelefon: {PHONE}\nE-Mail: {EMAIL}", ("DE", "AT", "CH")),
    T("email_signature", "Cordialement,\n{NAME}\nPortable : {PHONE}", ("FR", "CH", "CA")),
    T("email_signature", "Kind regards,\n\n{NAME}\nSent from my iPhone"),
    T("email_signature", "Met vriendelijke groet,\n{NAME}\n{STREET}\n{ZIP}  {CITY}\nT {PHONE}", ("NL",)),
    T("email_signature", "Best,\n{NAME} (she/her)\nSenior Engineer · {COMPANY}\n{EMAIL} · {PHONE}"),
    T("email_signature", "Regards\n{NAME_uc}\nAccounts Dept.\nDirect line: {PHONE} | Fax: {PHONE3}"),
    # e-mail bodies
    T("email_body", "Dear {NAME2},\n\nI am writing to dispute a charge of {AMOUNT} on my card {CARD} dated {DATE}. I never authorised this transaction.\n\nSincerely,\n{NAME}"),
    T("email_body", "Hello,\n\nplease refund the deposit to my account:\nIBAN: {IBAN}\nAccount holder: {NAME}\n\nThank you!"),
    T("email_body", "Hi team,\n{NAME} ({EMAIL}) reported that invoice {INVOICE} was sent to {EMAIL2} by mistake. Can we resend it?\n\n{FIRST2}"),
    T("email_body", "Good morning Mr. {LAST},\n\nyour appointment has been moved to {WEEKDAY}. If that doesn't suit, call us on {PHONE}.\n\nRegards, {NAME2}"),
    T("email_body", "Dear Ms {LAST},\nWe received your passport renewal. For reference, your previous passport number was {PASSPORT}.\n"),
    T("email_body", "Hi {FIRST},\n\nThanks for your order {ORDER}! It will ship to:\n\n{NAME}\n{ADDR_BLOCK}\n\nQuestions? Just reply to this email."),
    T("email_body", "Hello {FIRST2}, my colleague {NAME3} will take over the account while I'm on leave. You can reach her at {EMAIL_ANY}."),
    T("email_body", "Dear {NAME},\nyour booking requires passport details. We have US passport {PASSPORT} on file; please confirm it is still valid."),
    T("email_body", "Dear Dr. {LAST},\n\nThank you for the referral of {NAME2}. We will contact the patient at {PHONE2}.\n\nKind regards,\n{NAME3}"),
    T("email_body", "Hallo {FIRST},\n\nvielen Dank für Ihre Bestellung {ORDER}. Die Lieferung erfolgt an:\n{ADDR_BLOCK}\n\nBei Fragen erreichen Sie uns unter {PHONE}.", ("DE", "AT", "CH")),
    T("email_body", "Gentile {NAME},\nle confermiamo la spedizione all'indirizzo {ADDR_LINE}. Per informazioni: {PHONE}.", ("IT",)),
    T("email_body", "Merhaba {FIRST} Hanım,\nkargonuz {ADDR_LINE} adresine yola çıktı.", ("TR",)),
    T("email_body", "Our {CITY} office number changed to {PHONE}. The extension for accounts is still 2214."),
    T("email_body", "Hi {FIRST},\nthe wire came back rejected — the bank says {IBAN} doesn't match the name {NAME}. Could you double-check?\nThanks, {FIRST2}"),
    T("email_body", "To: {EMAIL}\nCc: {EMAIL2}\nSubject: Lease renewal for {STREET}\n\nHi {FIRST}, attached is the renewal. Rent goes up to {AMOUNT} from {MONTH}."),
    T("email_forward", "---------- Forwarded message ---------\nFrom: {NAME} <{EMAIL}>\nDate: {DATE}\nSubject: Re: {TICKET} login issue\nTo: {NAME2} <{EMAIL2}>\n\nStill can't log in from {IP}."),
    T("email_forward", "> On {DATE}, {NAME} <{EMAIL}> wrote:\n> can you send the replacement to my work address instead?\n> {ADDR_LINE}\n\nDone, shipped today."),
    # forms
    T("form_multiline", "Name: {NAME}\nAddress: {STREET}\nCity: {CITY}\nPostcode: {ZIP}\nCountry: {COUNTRY}\nPhone: {PHONE}"),
    T("form_multiline", "Full name: {NAME_uc}\nSSN: {SSN}\nDriver's license: {DL} ({DL_ST})\nEmail: {EMAIL}"),
    T("form_multiline", "Cardholder: {NAME}\nCard number: {CARD}\nExp: 11/28\nCVV: ***\nBilling ZIP: {ZIP}", ("US",)),
    T("form_multiline", "First name: {FIRST}\nLast name: {LAST}\nE-mail: {EMAIL}\nMobile: {PHONE}\nNewsletter: yes"),
    T("form_multiline", "Beneficiary: {NAME}\nIBAN: {IBAN}\nBIC: DEUTDEFFXXX\nReference: {INVOICE}"),
    T("form_multiline", "SHIP TO\n{NAME_uc}\n{ADDR_BLOCK_uc}\nTEL {PHONE}"),
    T("form_multiline", "Applicant: {NAME}\nCurrent address:\n{ADDR_BLOCK}\nPassport no.: {PASSPORT}\nSSN: {SSN}"),
    T("form_multiline", "Employee: {LAST}, {FIRST}\nEmployee ID: E-{NUM}\nHome phone: {PHONE}\nEmergency contact: {NAME2} \u2013 {PHONE2}"),
    T("form_multiline", "Contact person: {NAME}\nStreet: {STREET}\nPostal code: {ZIP}\nTown: {CITY}\nVAT ID: DE{NUM9}"),
    T("form_multiline", "KYC check\n---------\nLegal name: {NAME}\nResidential address: {ADDR_LINE}\nIP at signup: {IP}\nDevice: {MODEL}"),
    T("form_multiline", "ID type: Driver License\nState: {DL_ST}\nID number: {DL}\nName as on ID: {NAME_uc}"),
    T("form_multiline", "Nimi: {NAME}\nOsoite: {STREET}\n{ZIP} {CITY}\nPuhelin: {PHONE}", ("FI",)),
    T("form_multiline", "Imię i nazwisko: {NAME}\nAdres: {STREET}, {ZIP} {CITY}\nTel.: {PHONE}", ("PL",)),
    T("form_multiline", "お届け先: {JA_BLOCK}\n氏名: {JA_NAME} 様\n電話: {PHONE}", ("JP",)),
    T("form_multiline", "Sender:\n{NAME}\n{ADDR_BLOCK}\n\nRecipient:\n{NAME2}\n{ADDR2_BLOCK}"),
    T("form_multiline", "Old address: {ADDR_LINE}\nNew address: {ADDR2_LINE}\nEffective {DATE}"),
    T("form_multiline", "Patient: {NAME}\nMRN: {NUM}\nPreferred contact: {PHONE}\nPharmacy: {STREET}, {CITY}"),
    T("form_multiline", "Tenant 1: {NAME}\nTenant 2: {NAME2}\nProperty: {ADDR_LINE}\nDeposit paid to: {IBAN}"),
    T("form_multiline", "Account holder ........ {NAME}\nIBAN .................. {IBAN}\nStatement period ...... {MONTH}"),
    T("form_multiline", "W-9 details\nName: {NAME}\nAddress: {STREET}\nCity, state, ZIP: {CITY}, {REGION} {ZIP}\nTIN: {SSN}"),
    T("form_inline", "Name: {NAME} | Email: {EMAIL} | Phone: {PHONE} | Plan: {PRODUCT}"),
    T("form_inline", "SSN/TIN: {SSN}   Filing status: single   State: {REGION}"),
    T("form_inline", "Bill to: {NAME}, {ADDR_LINE} · Card: {CARD} · Order {ORDER}"),
    T("form_inline", "guest={NAME}; room=412; card_on_file={CARD_VISA}; arrival={DATE}"),
    # csv / tabular
    T("csv_row", '{ORDER},{NAME},{EMAIL},{PHONE},"{AMOUNT}"'),
    T("csv_row", "id;name;street;zip;city\n{NUM};{NAME};{STREET};{ZIP};{CITY}"),
    T("csv_row", '"{LAST}, {FIRST}","{STREET}","{CITY}","{ZIP}","{PHONE}"'),
    T("csv_row", "{TS}\t{IP4}\t{EMAIL}\tlogin_failed"),
    T("csv_row", "customer_id,ssn,card\n{NUM},{SSN},{CARD}"),
    T("csv_row", "{NAME};{IBAN};{AMOUNT};{DATE}"),
    T("csv_row", "| {NAME} | {EMAIL} | {PHONE} | active |"),
    T("csv_row", "employee,dl_number,dl_state\n\"{NAME}\",{DL},{DL_ST}"),
    # logs
    T("log_line", "{TS} INFO  auth: user={EMAIL} ip={IP} result=success session={UUID}"),
    T("log_line", "{TS} WARN payment: card {CARD} declined (code 05) for {NAME}"),
    T("log_line", '{IP4} - - [{CLF_TS}] "GET /api/v2/orders/{NUM} HTTP/1.1" 200 512 "-" "Mozilla/5.0"'),
    T("log_line", "[{TS}] DEBUG crm.sync upsert contact name='{NAME}' phone='{PHONE}' addr='{ADDR_LINE}'"),
    T("log_line", "{TS} sshd[{NUM}]: Failed password for invalid user admin from {IP4} port {PORT} ssh2"),
    T("log_line", 'audit: kyc.verify subject="{NAME}" ssn={SSN} dl={DL} status=PASS'),
    T("log_line", "firewall: DROP src={IP4} dst={IP4B} proto=TCP dpt={PORT}"),
    T("log_line", "{TS} notify: sms sent to {PHONE} (template=otp, provider=twilio)"),
    T("log_line", "{TS} ERROR mailer: bounce for {EMAIL} (550 5.1.1 user unknown), campaign {NUM}"),
    T("log_line", "{TS} INFO gateway: client [{IP6}]:{PORT} -> {HOST} {ERR}"),
    T("json_log", '{"level":"error","msg":"sync failed","user":"{EMAIL}","client_ip":"{IP6}","trace":"{HASH}"}'),
    T("json_log", '{"event":"payout.created","iban":"{IBAN}","amount":"{AMOUNT}","beneficiary":"{NAME}"}'),
    T("json_log", '{"ts":"{TS}","customer":{"name":"{NAME}","phone":"{PHONE}","ssn":"{SSN}"},"v":"{VERSION}"}'),
    # prose complaints
    T("complaint", "I have called your hotline three times and every time I'm told someone will ring me back on {PHONE}. Nobody has. My name is {NAME} and my account is registered at {STREET}, {CITY}. Fix this."),
    T("complaint", "Your courier left my parcel outside in the rain. I live at {STREET} and there is a clearly marked letterbox. Tracking {TRACK}. — {NAME}"),
    T("complaint", "Someone opened a credit line in my name using my social security number {SSN}. I live in {CITY}, {STATE} and have never even been to {CITY2}."),
    T("complaint", "To whom it may concern: on {DATE} your technician, who introduced himself as {FIRST2}, damaged the wall at {STREET}. I expect a reply at {EMAIL}."),
    T("complaint", "I want the charge on {CARD} reversed. I cancelled {PRODUCT} on {DATE} and still got billed {AMOUNT}."),
    T("complaint", "This is the fourth time I'm writing. My mother, {NAME2}, is 84 and cannot manage your online portal. Please send paper statements to her at {ADDR_LINE}."),
    T("complaint", "After 11 years with {COMPANY} I am leaving. Close the account of {NAME} and send the remaining balance to {IBAN}. Do NOT call {PHONE} again."),
    T("complaint", "Your app logged me out and now says my account was accessed from {IP4} in {CITY2}. That wasn't me! {NAME}, {EMAIL}"),
    # shipping
    T("shipping", "Please leave the box with the neighbour at {STREET} if nobody answers. Gate code is 4471."),
    T("shipping", "Deliver to: {NAME}, {ADDR_LINE}. Call {PHONE} on arrival, the buzzer is broken."),
    T("shipping", "Ship to\n{NAME}\nc/o {COMPANY}\n{ADDR_BLOCK}"),
    T("shipping", "Recipient {NAME} — {STREET}, back entrance. Don't ring before 9am, baby sleeping."),
    T("shipping", "Pickup point changed: parcel {TRACK} will now go to {ADDR_LINE} (locker 12)."),
    T("shipping", "Deliver to {NAME}, {ADDR_LINE}. Landmark: opposite the bus depot. Mob: {PHONE}", ("IN",)),
    T("shipping", "Please note the new delivery address for {ORDER}:\n{ADDR_BLOCK}\nContact on site: {FIRST} ({PHONE})"),
    # address-only blocks
    T("address_block", "{NAME}\n{ADDR_BLOCK}"),
    T("address_block", "Mailing address:\n{ADDR_BLOCK}"),
    T("address_block", "Return to sender:\n{NAME2}\n{ADDR_BLOCK}"),
    T("address_block", "{NAME}\n{ADDR_BLOCK}\n{EMAIL}"),
    T("address_block", "Attn: {NAME} / {COMPANY}\n{ADDR_BLOCK}"),
    # voice / sms
    T("voicemail", "Hi, this is {NAME} calling about the quote you sent, um, could you call me back at {PHONE}? That's {PHONE}. Thanks, bye."),
    T("voicemail", "uh yeah hi it's {FIRST_lc} {LAST_lc} again, about the card — actually the full number is {CARD}, call me"),
    T("transcript", "AGENT: Can I get the street address?\nCALLER: It's {STREET}.\nAGENT: And the zip?\nCALLER: {ZIP}.", US),
    T("transcript", "Operator: And your full name?\nCaller: {NAME}.\nOperator: Date of the incident?\nCaller: {DATE}, around {TIME}, outside {STREET}."),
    T("sms", "Your code is 481920. If you didn't request it, text STOP or call {PHONE}."),
    T("sms", "{FIRST}: running late, meet at {STREET} instead? 🙏"),
    # CRM / tickets / notes
    T("crm_note", "Spoke with {NAME} ({PHONE}). Customer moving to {ADDR_LINE} on {DATE}; update billing before the {MONTH} cycle."),
    T("crm_note", "Caller {NAME} verified identity with SSN {SSN}; new mailing address {ADDR_LINE}."),
    T("crm_note", "Lead: {NAME} from {COMPANY}, based in {CITY}. Wants a demo of {PRODUCT} {VERSION}. Prefers email: {EMAIL}."),
    T("crm_note", "{NAME_lc} called again re: {TICKET}. wants callback on {PHONE2}, not the number on file."),
    T("crm_note", "Account merged: {EMAIL} → {EMAIL2}. Both belong to {NAME}."),
    T("crm_note", "VIP: {NAME}. Always ships to {ADDR_LINE}. Card on file {CARD_MC}."),
    T("support_ticket", "Ticket {TICKET}\nReporter: {EMAIL}\nSeverity: P2\n\nUser {NAME} cannot reach the dashboard from {IP}. Error {ERR}."),
    T("support_ticket", "Subject: Wrong IBAN on invoice {INVOICE}\n\nThe IBAN printed is outdated, please use {IBAN} going forward. — {NAME2}, Accounts Payable"),
    T("support_ticket", "Blocked login attempts for {EMAIL} from {IP} and [{IP6}]:443 within {QTY} seconds."),
    T("support_ticket", "Steps to reproduce:\n1. Log in as {EMAIL}\n2. Open Settings > Billing\n3. Enter IBAN {IBAN}\nExpected: saved. Actual: {ERR}"),
    T("hr_record", "New hire onboarding — {NAME}, start date {DATE}. Payroll IBAN {IBAN}. Home address: {ADDR_LINE}."),
    T("hr_record", "Background check for {NAME}: SSN {SSN}, {DL_STATE} driver's license {DL}, US passport {PASSPORT}."),
    T("hr_record", "Reference for {NAME2} provided by {NAME} ({EMAIL}), former manager at {COMPANY}."),
    T("hr_record", "I-9 documents seen: U.S. passport {PASSPORT} (List A). Employee {NAME}, verified by {NAME2}."),
    T("meeting_notes", "Attendees: {NAME}, {NAME2}, {NAME3}\nAction: {FIRST} to send the {PRODUCT} quote to {EMAIL2} by {WEEKDAY}."),
    T("calendar", "Dinner with {FIRST2} and {NAME3} at 7pm — {STREET}, {CITY}. Booking under {LAST}."),
    T("legal", 'THIS AGREEMENT is made between {COMPANY} and {NAME_uc}, residing at {ADDR_LINE} (the "Tenant").'),
    T("marketplace", "Selling my old {MODEL}, pick-up only from {STREET} ({CITY}). Text {PHONE}, no lowballers."),
    T("review", "Five stars for {FIRST2} at the {CITY} branch, she sorted out my mortgage paperwork in a day!"),
    T("classified", "Room available in shared flat, {STREET}, {CITY}. Contact {FIRST} on {PHONE}."),
    T("invitation", "Save the date! {FIRST} & {FIRST2} — RSVP to {EMAIL} or {PHONE}."),
    T("donation", "Thank you {FIRST} for your gift of {AMOUNT}! Your receipt was sent to {EMAIL}."),
    T("hotel", "Reservation {ORDER} for {NAME}, 2 nights, arriving from {CITY2}. Guarantee: {CARD}."),
    T("travel", "Flight {FLIGHT} {CITY} → {CITY2}, passenger {NAME_uc}, passport {PASSPORT}"),
    T("school", "Pickup authorised: {NAME2} (grandmother), phone {PHONE}. Parent: {NAME}."),
    T("payment", "Paying by card: {CARD}, name on card {NAME_uc}."),
    T("payment", "Amex {CARD_AMEX} exp 04/29 — please charge the remaining balance of {AMOUNT}."),
    T("payment", "Bitte überweisen Sie den Betrag auf folgendes Konto: {IBAN} (Kontoinhaber: {NAME}).", ("DE", "AT", "CH")),
    T("payment", "Virement à effectuer sur l'IBAN {IBAN} au nom de {NAME}.", ("FR",)),
    T("payment", "Rekeningnummer: {IBAN} t.n.v. {NAME}, {CITY}", ("NL",)),
    T("payment", "Please wire the deposit of {AMOUNT} to IBAN {IBAN}; use {INVOICE} as the reference."),
    T("payment", "Discover card {CARD_DISC}, billing address {ADDR_LINE}"),
    T("code", 'TEST_USER = "{EMAIL}"  # TODO remove before release, real account of {NAME}'),
    T("code", "INSERT INTO customers (name, email, phone) VALUES ('{NAME}', '{EMAIL}', '{PHONE}');"),
    T("code", "owner:\n  name: {NAME}\n  email: {EMAIL}\nallowed_ips:\n  - {IP4}\n  - {IP6}"),
    T("code", "curl -H 'X-Forwarded-For: {IP4}' https://api.example.com/v1/users?email={EMAIL}"),
    T("chat", "Is it OK if the technician comes to {STREET} instead of the office?"),
    T("complaint", "The bin lorry has skipped {STREET} for three weeks now. Whoever plans the route, please fix it. {FIRST}"),
    T("form_inline", "Address line 1: {STREET} | Address line 2: — | Phone: {PHONE}"),
    T("crm_note", "Do not deliver to {STREET} (dog). Customer {NAME} prefers pickup."),
    T("payment", "Standing order from {NAME} to {NAME2}: {AMOUNT} monthly, IBAN {IBAN2}."),
    T("chat", "my card {CARD} expired, the new one is {CARD_VISA}"),
    T("email_body", "Hi {FIRST},\nfor the tax return I still need {NAME2}'s details, and please re-check your SSN: you sent {SSN}.\n{FIRST2}"),
    T("letter", "{NAME}\n{STREET}\n\nDear {FIRST2},\n\nI am writing about the hedge between our gardens."),
    T("notice", "Lost cat! Grey tabby, answers to Miso. Last seen near {STREET}. Call {FIRST} on {PHONE}."),
    T("report", "Vehicle parked outside {STREET} since {DATE}, plate unknown. Reported by {NAME}."),
    T("chat", "Good news: the locksmith {FIRST2} can come to {STREET} at {TIME}."),
    T("chat_lowercase", "{FIRST_lc} here, leaving the spare key under the mat at {STREET_lc}"),
    T("form_multiline", "Account name: {NAME}\nIBAN: {IBAN}\nMobile for SMS-TAN: {PHONE}"),
    T("chat", "The IBAN on the invoice ({IBAN}) is wrong, it should be {IBAN2}. Sorry! {FIRST}"),
    T("email_body", "Hi {FIRST2},\nTaxpayer {NAME}, SSN {SSN}, asked for a copy of last year's 1099.\nThanks"),
    T("log_line", "{TS} INFO billing: tokenised card {CARD} for customer {NUM} ({EMAIL})"),
    T("chat", "They asked for ID so I gave them my {DL_STATE} license, {DL}. Was that a mistake?"),
    T("travel", "Passenger {NAME}: US passport {PASSPORT}, seat 14C, {FLIGHT}."),
    # other languages
    T("chat", "Bonjour, je m'appelle {NAME}, j'habite {STREET} à {CITY}. Mon numéro : {PHONE}.", ("FR",)),
    T("chat", "Hola, soy {NAME}. Mi dirección es {STREET}, {ZIP} {CITY}. Gracias.", ("ES",)),
    T("chat_lowercase", "hoi, met {FIRST_lc}! mijn nieuwe adres is {STREET}, {ZIP} {CITY}", ("NL",)),
    T("chat", "Oi! Aqui é {NAME}, meu CEP é {ZIP} e o endereço {STREET}, {CITY}.", ("BR",)),
    T("chat", "Hej! Det är {FIRST}. Skicka paketet till {STREET}, {ZIP} {CITY}.", ("SE", "FI", "DK")),
    T("chat", "I'm staying at {STREET}, {CITY} until {MONTH}. Japanese mobile: {PHONE}", ("JP",)),
    T("chat", "Moi! Olen {NAME} ja asun osoitteessa {STREET}, {CITY}. Soita {PHONE}.", ("FI",)),
    T("chat", "Dzień dobry, nazywam się {NAME}, proszę o kontakt pod numerem {PHONE}.", ("PL",)),
]

TEST_HARD_NEGATIVES: list[T] = [
    T("hard_negative", "Acme CloudSync Pro {VERSION} is now available. Upgrade from build {BUILD} to fix error {ERR}."),
    T("hard_negative", "Order {ORDER} has shipped via UPS, tracking {TRACK}. Expected delivery: {WEEKDAY}."),
    T("hard_negative", "Will you check whether the May release still breaks the Jira integration ({TICKET})? It failed with HTTP 503 twice."),
    T("hard_negative", "Grace period for invoice {INVOICE} ends on {DATE}; after that a late fee of {PCT} applies."),
    T("hard_negative", "Windows Server 2019 update KB5034439 fails with {ERR} on {HOST}."),
    T("hard_negative", "Checksum mismatch: expected {SHA} but got {SHA2}."),
    T("hard_negative", "Ticket {TICKET} was merged into {TICKET2}. Root cause: connection pool exhausted on port {PORT}."),
    T("hard_negative", "The Main Street Edition bundle ({SKU}) is back in stock at {AMOUNT}."),
    T("hard_negative", "Build {VERSION4} introduced a regression in the print spooler."),
    T("hard_negative", "Please mark the ticket as resolved and bill the customer for {QTY} hours."),
    T("hard_negative", "ISBN {ISBN} — second edition, {NUM} pages, paperback."),
    T("hard_negative", "Request {UUID} timed out after 30000 ms (upstream {HOST}:{PORT})."),
    T("hard_negative", "Revenue grew {PCT} quarter over quarter to {AMOUNT}; churn held at {PCT2}."),
    T("hard_negative", "Config lives in {PATH}; logs rotate nightly at 02:00 UTC."),
    T("hard_negative", "Rose Gold and Midnight Blue variants of the {MODEL} ship in {MONTH}."),
    T("hard_negative", "Frank feedback from retro #{QTY}: Monday deploys are too risky. Let's move them to {WEEKDAY}."),
    T("hard_negative", "Commit {HASH7} reverts {HASH7B}; CI run #{NUM} is green."),
    T("hard_negative", "Part no. {ZIPLIKE} fits models {SKU} and {SKU2}. Torque to 12 Nm."),
    T("hard_negative", "Serial {SERIAL}, firmware {VERSION}, uptime 41 days."),
    T("hard_negative", "{TS} ERROR worker-7 job={UUID} failed: {ERR} (attempt 3/5)"),
    T("hard_negative", '{"status":503,"error":"Service Unavailable","request_id":"{UUID}","retry_after":120}'),
    T("hard_negative", "Amber warning light on unit {SERIAL} — replace filter {SKU}."),
    T("hard_negative", "We use the Oxford comma in all docs (style guide rev. {QTY}, section 4.2.1)."),
    T("hard_negative", "Project Phoenix kickoff moved to {WEEKDAY} {TIME}; agenda is in Confluence."),
    T("hard_negative", "The Java heap hit {PCT} before the GC pause on {HOST}; bump -Xmx to 8g."),
    T("hard_negative", "order_id,sku,qty,unit_price,currency\n{ORDER},{SKU},{QTY},{PRICE},EUR"),
    T("hard_negative", "Invoice {INVOICE} total {AMOUNT} incl. VAT {PCT}. Payment terms: net 30."),
    T("hard_negative", "Hope this helps! The Summer sale runs {DATE} to {DATE2}."),
    T("hard_negative", "Sprint 42 velocity: 38 points. Carry-over: {TICKET}, {TICKET2}, {TICKET3}."),
    T("hard_negative", "SKU {SKU}: Baker Street Collection, walnut, 180 x 90 cm."),
    T("hard_negative", "Reboot scheduled for {DATE} 23:00 CET. Affected: {HOST}, {HOST2}."),
    T("hard_negative", "Exit code 137 (OOMKilled) in pod api-{HASH7}-xk2lp, node pool n2-standard-8."),
    T("hard_negative", "Coupon SAVE20 cannot be combined with Black Friday pricing. Max discount {PCT}."),
    T("hard_negative", "Release notes {VERSION}: fixed a race in the scheduler (#{NUM}), bumped openssl to 3.0.13."),
    T("hard_negative", "Jack the volume up on the speaker in room {QTY}B; the HDMI port on the left is dead."),
    T("hard_negative", "The Boston Terrier plush (item {SKU}) is out of stock until {MONTH}."),
    T("hard_negative", "Tracking {TRACK_USPS} shows 'label created' since {DATE}."),
    T("hard_negative", "Dashboard latency p99 = 845 ms, p50 = 112 ms, error rate {PCT}."),
    T("hard_negative", "Kernel 6.1.0-18-amd64, Debian 12.5, glibc 2.36 — reproducible on {HOST} and {HOST2}."),
    T("hard_negative", "Max retries (5) reached for webhook {URL} (delivery {UUID})."),
    T("hard_negative", "Reminder: the April and June cohorts share one Slack channel, #cohort-{NUM}."),
    T("hard_negative", "Lot {ZIPLIKE}-B expires {DATE}. Store below 25 °C."),
    T("hard_negative", "Customer count in {MONTH}: {NUM}. Average basket {AMOUNT}."),
    T("hard_negative", "{COMPANY} Q3 report: {PCT} growth, {AMOUNT} EBITDA, headcount {NUM2}."),
    T("hard_negative", "Refund of {AMOUNT} for order {ORDER} was issued to the original payment method."),
    T("hard_negative", "Error {ERR} while writing {PATH} (disk 97% full)."),
    T("hard_negative", "Set max_connections=200 and shared_buffers=4GB on {HOST}, then restart on port {PORT}."),
    T("hard_negative", "Meeting notes {DATE}: agreed to sunset {PRODUCT} by {MONTH}; budget {AMOUNT}."),
    T("hard_negative", "Batch {ZIPLIKE} passed QA with {PCT} yield; next up is batch {ZIPLIKE2}."),
    T("hard_negative", "Your subscription to {PRODUCT} renews on {DATE} for {AMOUNT}."),
    T("hard_negative", "Password must be 12+ characters; last changed {DATE}. Policy {VERSION}."),
    T("hard_negative", "Disk usage on {HOST}: 412G/500G ({PCT})."),
    T("hard_negative", "Merge request !{NUM} bumps {PRODUCT} from {VERSION} to {VERSION2}."),
    T("hard_negative", "Case {TICKET} escalated to tier 2 on {WEEKDAY}; SLA breach in 4h."),
    T("hard_negative", "Gift card balance: {AMOUNT}. Card ID {UUID}."),
    T("hard_negative", "Server room reached 31 °C at {TIME}; cooling unit {SKU} restarted."),
    T("hard_negative", "Download {PATH} ({QTY} MB, sha256 {SHA})."),
    T("hard_negative", "The Sterling silver bracelet (SKU {SKU}) comes in a gift box, {AMOUNT}."),
    T("hard_negative", "Hunter green and Olive drab are the new {MODEL} case colours."),
    T("hard_negative", "Invoice {INVOICE}: 3 x {PRODUCT} licences at {AMOUNT} each, due {DATE}."),
    T("hard_negative", "API rate limit is 600 requests/min; you used {PCT} of it in the last hour."),
    T("hard_negative", "The {MONTH} newsletter goes out {WEEKDAY} at {TIME}; open rate last time {PCT}."),
    T("hard_negative", "CVE-2024-3094 affects xz {VERSION}; patched build {BUILD}."),
    T("hard_negative", "Queue depth {NUM} on topic orders.v2, consumer lag {NUM2} ms."),
    T("hard_negative", "Return label {TRACK} generated for RMA-{NUM}."),
    T("hard_negative", "Baggage tag {SKU}, flight {FLIGHT}, gate B{QTY}."),
    T("hard_negative", "The Dawn shift starts at {TIME}; overtime is capped at {PCT}."),
    T("hard_negative", "OTP expired. Request a new code; reference {UUID}."),
    T("hard_negative", "Ticker AMZN closed at {AMOUNT}, up {PCT}."),
    T("hard_negative", "=VLOOKUP(A2,Sheet2!A:C,3,FALSE) returns #N/A for row {NUM}."),
    T("hard_negative", "Order {ORDER} contains 2x {PRODUCT} and 1x {MODEL}; subtotal {AMOUNT}."),
    T("hard_negative", "Hope you had a good Easter! Q2 planning starts {WEEKDAY} ({DATE})."),
    T("hard_negative", "Firmware {VERSION4} for {MODEL} is rolling out to {PCT} of devices."),
]
TEST_TEMPLATES += TEST_HARD_NEGATIVES

DEV_TEMPLATES: list[T] = [
    T("chat", "Hello, I'd like to change the delivery address on {ORDER} to {STREET}, {CITY}. — {NAME}"),
    T("chat", "Support: Can you read me the long number on the card?\nMe: {CARD}"),
    T("chat", "{FIRST2}, can you call {NAME} back? Her number is {PHONE}, she's upset about the {PRODUCT} bill."),
    T("chat", "The login alert says {IP}. Is that one of your servers or should I panic?"),
    T("chat", "fine, the social is {SSN}, but I want this account closed after"),
    T("chat", "My license is from {DL_STATE}, number {DL}. Does that work for the rental?"),
    T("chat", "Here is my passport no. {PASSPORT} for the visa letter, thanks {FIRST2}!"),
    T("chat_lowercase", "hi im {NAME_lc}, cant log in with {EMAIL} since yesterday"),
    T("chat_lowercase", "pls send it to {STREET_lc}, buzz {LAST_lc}"),
    T("chat_lowercase", "whos this? oh hi {FIRST_lc}! yeah {PHONE} is my new number"),
    T("chat_lowercase", "paid with {CARD} but the order still says pending ({ORDER})"),
    T("chat_lowercase", "refund to {IBAN} please, not the card"),
    T("chat_lowercase", "can you ask for {FIRST_lc} at reception, she has my parcel"),
    T("email_signature", "Many thanks,\n{NAME}\n{COMPANY}\n{ADDR_BLOCK}\nPhone {PHONE}"),
    T("email_signature", "All the best\n— {FIRST}\n{EMAIL} | {PHONE}"),
    T("email_signature", "Saludos cordiales,\n{NAME}\nTel.: {PHONE}", ("ES",)),
    T("email_signature", "Med vänliga hälsningar\n{NAME}\n{STREET}\n{ZIP} {CITY}", ("SE",)),
    T("email_body", "Dear customer service,\n\nmy name is {NAME} and I was billed {AMOUNT} twice on card {CARD}. Please fix it.\n\n{FIRST}"),
    T("email_body", "Hi {FIRST},\n\njust confirming your new payout account: {IBAN}.\n\nBest, {NAME2}"),
    T("email_body", "Good afternoon,\nplease update the contact for {COMPANY} to {NAME} ({EMAIL}, {PHONE}).\nRegards"),
    T("email_body", "Sehr geehrte Frau {LAST},\n\nIhre Sendung wird an {ADDR_LINE} zugestellt.\n\nViele Grüße\n{NAME2}", ("DE", "AT")),
    T("email_body", "Bonjour {FIRST},\nvotre colis sera livré au {ADDR_LINE}.\nBien à vous,\n{NAME2}", ("FR",)),
    T("email_body", "Dear {NAME},\nThe passport number you gave ({PASSPORT}) does not match our records. Please call {PHONE}."),
    T("email_forward", "From: {NAME} <{EMAIL}>\nSent: {DATE}\nTo: support\nSubject: {TICKET}\n\nmy address changed to {ADDR_LINE}"),
    T("form_multiline", "Customer name: {NAME}\nStreet address: {STREET}\nZIP: {ZIP}\nCity: {CITY}\nState: {REGION}", US),
    T("form_multiline", "Surname: {LAST}\nGiven name: {FIRST}\nTelephone: {PHONE}\nE-mail address: {EMAIL}"),
    T("form_multiline", "Payee: {NAME}\nAccount (IBAN): {IBAN}\nAmount: {AMOUNT}"),
    T("form_multiline", "DELIVERY ADDRESS\n{NAME}\n{ADDR_BLOCK}"),
    T("form_multiline", "Social Security No.: {SSN}\nDriver License No.: {DL}\nIssuing state: {DL_STATE}"),
    T("form_multiline", "Naam: {NAME}\nAdres: {STREET}\nPostcode: {ZIP}\nWoonplaats: {CITY}", ("NL",)),
    T("form_multiline", "Nome: {NAME}\nEndereço: {ADDR_LINE}\nCelular: {PHONE}", ("BR",)),
    T("form_inline", "name={NAME} email={EMAIL} phone={PHONE} ip={IP}"),
    T("form_inline", "Traveller: {NAME_uc} · Passport: {PASSPORT} · From: {CITY}"),
    T("csv_row", "{NUM},{NAME},{STREET},{CITY},{ZIP},{COUNTRY}"),
    T("csv_row", "date,name,card,amount\n{DATE},{NAME},{CARD},{PRICE}"),
    T("csv_row", "{EMAIL};{IP4};{TS}"),
    T("csv_row", "ssn\tname\n{SSN}\t{NAME}"),
    T("log_line", "{TS} INFO login ok user={EMAIL} src={IP4}"),
    T("log_line", "{TS} WARN fraud.check flagged card={CARD} name=\"{NAME}\" ip={IP}"),
    T("log_line", "{TS} kernel: [UFW BLOCK] IN=eth0 SRC={IP4} DST={IP4B} PROTO=UDP DPT={PORT}"),
    T("json_log", '{"lvl":"info","evt":"profile.updated","name":"{NAME}","street":"{STREET}","zip":"{ZIP}"}'),
    T("json_log", '{"msg":"refund","to_iban":"{IBAN}","ref":"{INVOICE}"}'),
    T("complaint", "I am furious. The engineer never showed up at {STREET} and nobody answers {PHONE}. Sort it out. {NAME}"),
    T("complaint", "Somebody used my SSN {SSN} to open an account with you. I have never lived in {CITY}."),
    T("complaint", "Two weeks and my refund still hasn't reached {IBAN}. Shame on {COMPANY}."),
    T("shipping", "Leave at the back door of {STREET}. If out, give it to {FIRST2} next door."),
    T("shipping", "Consignee: {NAME}\n{ADDR_BLOCK}\nMobile {PHONE}"),
    T("address_block", "{NAME}\n{ADDR_BLOCK}\nTel {PHONE}"),
    T("address_block", "Postal address\n{ADDR_BLOCK}"),
    T("voicemail", "hey it's {FIRST}, call me back on {PHONE} when you get this, ok bye"),
    T("crm_note", "Called {NAME} at {PHONE}; confirmed move to {ADDR_LINE}."),
    T("crm_note", "{NAME} asked us to use {EMAIL2} instead of {EMAIL} from now on."),
    T("support_ticket", "Issue {TICKET}: user {EMAIL} locked out after 5 attempts from {IP6}."),
    T("hr_record", "Payroll change: {NAME}, new IBAN {IBAN}, effective {MONTH}."),
    T("hr_record", "Verified {NAME}: SSN {SSN}, passport {PASSPORT}, {DL_ST} license {DL}."),
    T("payment", "Charge {AMOUNT} to Mastercard {CARD_MC}, cardholder {NAME}."),
    T("code", "USERS = [{'name': '{NAME}', 'mail': '{EMAIL}'}]"),
    T("chat", "Could the courier try {STREET} again tomorrow? I'll be in after {TIME}."),
    T("note", "{NAME} lives at {STREET} — spare key is with {FIRST2}."),
    T("payment", "Visa {CARD_VISA} for {NAME}, amount {AMOUNT}"),
    T("form_inline", "IBAN: {IBAN} / BIC: INGBNL2A / Name: {NAME}"),
    T("chat", "My SSN? It's {SSN}. And my license is {DL}, {DL_ST}."),
    T("email_body", "Hello {FIRST},\nwe could not verify passport {PASSPORT}. Please upload a clearer scan.\n{NAME2}"),
    T("chat_lowercase", "new flat is {STREET_lc}, come by saturday"),
    T("complaint", "Roadworks outside {STREET} have blocked my driveway for a week. — {NAME}"),
    T("chat", "Ciao, sono {NAME}, abito in {STREET}, {ZIP} {CITY}.", ("IT",)),
    T("chat", "Merhaba, ben {NAME}. Adresim: {ADDR_LINE}. Tel: {PHONE}", ("TR",)),
    T("chat", "Namaste, I'm {NAME}. Address: {ADDR_LINE}. Please call {PHONE}.", ("IN",)),
    T("form_multiline", "〒 お届け先\n{JA_BLOCK}\n{JA_NAME}", ("JP",)),
    T("chat", "Hi, {NAME} here — my postcode is {ZIP} and the house is {STREET}.", ("UK", "IE", "AU")),
]

DEV_HARD_NEGATIVES: list[T] = [
    T("hard_negative", "Nimbus Backup {VERSION} fixes {ERR} seen after build {BUILD}."),
    T("hard_negative", "Your order {ORDER} is out for delivery. Track it with {TRACK}."),
    T("hard_negative", "Can we ship the June update before the Grace window closes? Jira says {TICKET} is blocked."),
    T("hard_negative", "Hash {HASH} matched the release artefact in {PATH}."),
    T("hard_negative", "Invoice {INVOICE} ({AMOUNT}) is due {DATE}."),
    T("hard_negative", "Trace {UUID} shows 3 retries against {HOST}:{PORT}."),
    T("hard_negative", "Version {VERSION4} of the agent is deprecated; upgrade to {VERSION}."),
    T("hard_negative", "Conversion up {PCT}, bounce rate down {PCT2} since the {MONTH} redesign."),
    T("hard_negative", "SKU {SKU} (Park Avenue collection) restocks on {WEEKDAY}."),
    T("hard_negative", "{TS} WARN cache miss ratio {PCT} on {HOST}"),
    T("hard_negative", "ISBN {ISBN}, hardcover, {AMOUNT}."),
    T("hard_negative", "Will do — I'll bill it under cost centre {ZIPLIKE} and close {TICKET}."),
    T("hard_negative", "Ticket {TICKET}: HTTP 503 from the load balancer, error {ERR}."),
    T("hard_negative", "Model {MODEL}, serial {SERIAL}, warranty until {DATE}."),
    T("hard_negative", "Tracking {TRACK_USPS} delayed at the regional facility."),
    T("hard_negative", "The Victoria sponge and the Turkey club are on the {WEEKDAY} menu, {AMOUNT} each."),
    T("hard_negative", "Price change: {PRODUCT} goes from {AMOUNT} to {AMOUNT2} in {MONTH}."),
    T("hard_negative", "Pipeline #{NUM} failed at stage test ({ERR})."),
    T("hard_negative", "Checksum {HASH7} ok; image size {QTY}0 MB, tag {VERSION}."),
    T("hard_negative", "Use Georgia 12 pt and 1.5 spacing for the {MONTH} report."),
    T("hard_negative", "Return window: 30 days from {DATE}. Restocking fee {PCT}."),
    T("hard_negative", "Node {HOST} reported {ERR} at {TS}."),
    T("hard_negative", "Warehouse bin A-{QTY}-{ZIPLIKE} is empty; reorder {SKU}."),
    T("hard_negative", "Lucky draw! Ticket numbers {NUM} and {NUM2} win a {MODEL}."),
]
DEV_TEMPLATES += DEV_HARD_NEGATIVES
# fmt: on


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args()

    dev_texts = {t.text for t in DEV_TEMPLATES}
    test_texts = {t.text for t in TEST_TEMPLATES}
    assert not dev_texts & test_texts, "dev and test templates must be disjoint"
    assert len(dev_texts) == len(DEV_TEMPLATES) and len(test_texts) == len(TEST_TEMPLATES), (
        "duplicate template"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for name, templates in (("dev", DEV_TEMPLATES), ("test", TEST_TEMPLATES)):
        rows = build(name, templates)
        counts = validate(rows)
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        shapes = Counter(r["shape"] for r in rows)
        report[name] = {
            "path": str(path),
            "rows": len(rows),
            "hard_negative_rows": shapes["hard_negative"],
            "templates": len(templates),
            "shapes": len(shapes),
            "bytes": path.stat().st_size,
            "spans": {k: counts[k] for k in TYPES},
            "total_spans": sum(counts.values()),
        }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
