"""Deterministic generator of dirty support-ticket data for a fictional B2B software vendor.

Acme Software sells AcmeCRM, AcmeDesk, AcmeBilling and AcmeSync. Each ticket is a customer query
plus the agent's step-by-step solution, with the product and a category, written as an
OpenAI/TRL chat record::

    {"ticket_id": "T0000042", "product": "Acme CRM Pro", "category": "billing",
     "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

What makes it dirty (the rates are in :class:`Mix`): planted PII (person names, emails, phone
numbers, card numbers, street addresses, IP addresses, account ids) in both turns, product-name
variants to standardise (``Acme CRM Pro`` -> ``AcmeCRM``, see ``glossary.yaml``), exact and
near duplicates, mislabeled categories, and junk rows: empty, slang, off-topic, other
languages, truncated JSON and invalid UTF-8.

A ground-truth sidecar (``<name>.truth.jsonl``, one line per output line, same order) says what
was planted: the row's kind, the PII values by type and turn, which row a duplicate copies, the
true category of a mislabeled row. It is the answer key for recall and dedup tests.

Same seed, same size -> byte-identical files. Memory stays flat in the number of rows (rows
are written as they are made; only the small pool that duplicates are drawn from is kept).

Preference pairs (``--preference``) in the same domain: ``{"prompt", "chosen", "rejected"}``
with the helpful step-by-step answer chosen over a vague or wrong one.

Run::

    python examples/support-tickets/ticketgen.py --rows 50000 --out /tmp/tickets
    python examples/support-tickets/ticketgen.py --rows 1000 --preference --out /tmp/prefs
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRODUCTS: dict[str, list[str]] = {
    # canonical -> variants customers write (the glossary maps variants back)
    "AcmeCRM": ["AcmeCRM", "Acme CRM Pro", "Acme CRM", "acme-crm", "ACME Crm"],
    "AcmeDesk": ["AcmeDesk", "Acme Desk", "Acme HelpDesk", "acmedesk"],
    "AcmeBilling": ["AcmeBilling", "Acme Billing", "Acme Invoicing", "acme-billing"],
    "AcmeSync": ["AcmeSync", "Acme Sync", "Acme Data Sync", "acmesync"],
}
CATEGORIES = ("login", "billing", "sync", "performance", "integration", "export")

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Olga", "Diego", "Priya", "Lukas", "Fatima", "Noah",
    "Sofia", "Kenji", "Emma", "Mateo", "Grace", "Omar", "Hannah", "Ivan", "Chloe", "Samuel",
    "Elena", "Tom", "Nadia", "Victor", "Laura", "Ahmed", "Julia", "Peter", "Mei", "Daniel",
)  # fmt: skip
LAST_NAMES = (
    "Lopez", "Smith", "Khan", "Wang", "Petrova", "Garcia", "Sharma", "Weber", "Haddad",
    "Johnson", "Rossi", "Tanaka", "Brown", "Fernandez", "Kim", "Nasser", "Miller", "Novak",
    "Dubois", "Anderson", "Costa", "Schmidt", "Okafor", "Larsen", "Moreau", "Jensen",
)  # fmt: skip
COMPANIES = (
    "Northwind Traders",
    "Globex",
    "Initech",
    "Umbrella Logistics",
    "Stark Supplies",
    "Wayne Foods",
    "Hooli",
    "Vandelay Imports",
    "Soylent Labs",
    "Tyrell Freight",
)
STREETS = (
    "Main Street",
    "Oak Avenue",
    "Maple Drive",
    "Cedar Lane",
    "Elm Street",
    "Park Road",
    "Lake View Drive",
    "Sunset Boulevard",
    "Hill Street",
    "River Road",
)
CITIES = (
    "Springfield, IL 62704",
    "Austin, TX 78701",
    "Denver, CO 80202",
    "Portland, OR 97205",
    "Madison, WI 53703",
    "Boston, MA 02108",
)
AREA_CODES = ("212", "312", "415", "617", "206", "303", "512", "404", "713", "646")
DOMAINS = ("example.com", "northwind.io", "globex.net", "initech.org", "mailhost.co")

PROBLEMS: dict[str, list[str]] = {
    "login": [
        "I cannot log in to {product} since this morning, it says my password is invalid",
        "the two-factor code for {product} never arrives on my phone",
        "my account in {product} got locked after the password reset",
        "single sign-on to {product} fails with an error about the identity provider",
    ],
    "billing": [
        "we were charged twice for the {product} subscription this month",
        "the invoice from {product} shows the wrong number of seats",
        "our card was declined when renewing {product} although it has funds",
        "I need a refund for the {product} add-on we cancelled last week",
    ],
    "sync": [
        "{product} stopped syncing contacts with our mail server",
        "records edited in {product} do not show up on the mobile app",
        "the nightly sync job in {product} fails halfway with a timeout",
        "duplicate entries appear every time {product} syncs our calendar",
    ],
    "performance": [
        "{product} takes almost a minute to load the dashboard",
        "searching in {product} is extremely slow since the last update",
        "reports in {product} time out when the date range is longer than a month",
        "the {product} web page freezes when we open large accounts",
    ],
    "integration": [
        "the webhook from {product} to our ERP returns a 401 error",
        "the Slack integration of {product} posts nothing anymore",
        "our API key for {product} is rejected by the REST endpoint",
        "the Zapier connector for {product} cannot find our workspace",
    ],
    "export": [
        "exporting data from {product} to CSV produces an empty file",
        "the PDF export in {product} cuts off the last page",
        "scheduled exports from {product} never reach our storage bucket",
        "the Excel export of {product} mixes up the date columns",
    ],
}
STEPS: dict[str, list[str]] = {
    "login": [
        "Open the sign-in page and choose Forgot password to request a new reset link.",
        "Clear the browser cache and cookies for the {product} domain, then reload the page.",
        "Check that the device clock is set automatically, because codes expire after 30 seconds.",
        "Ask your administrator to unlock the account under Settings > Users > Security.",
        "Re-register the authenticator app from Profile > Two-factor authentication.",
        "Verify the identity provider certificate under Settings > Single sign-on.",
        "Sign in again and confirm that the dashboard loads without the error.",
    ],
    "billing": [
        "Open Billing > Invoices and download the invoice in question.",
        "Compare the seat count with Settings > Users > Active licences.",
        "Remove inactive users so the next invoice is prorated automatically.",
        "Update the payment method under Billing > Payment details and retry the charge.",
        "Our billing team has issued the refund; it appears within 5 to 10 business days.",
        "If the duplicate charge is still pending, it will drop off without any action.",
        "Reply to this ticket with the invoice number if the amount still looks wrong.",
    ],
    "sync": [
        "Go to Settings > Integrations > Mail and reconnect the mail account.",
        "Make sure the sync user still has read and write permission on the mailbox.",
        "Trigger a manual sync from the Sync status page and watch the log.",
        "Raise the sync timeout to 600 seconds under Advanced settings.",
        "Enable duplicate detection for calendar events under Sync rules.",
        "Update the mobile app to the latest version and sign in again.",
        "Check the sync log for rejected records and correct the flagged fields.",
    ],
    "performance": [
        "Disable widgets you do not use on the dashboard to cut the load time.",
        "Narrow the report date range or schedule the report to run overnight.",
        "Rebuild the search index from Settings > Maintenance > Search.",
        "Switch large accounts to the paged view under Display preferences.",
        "Try a private browser window to rule out a slow extension.",
        "Send us the timing from the browser network tab if it is still slow.",
        "Archive closed records older than two years to keep lists fast.",
    ],
    "integration": [
        "Regenerate the API key under Settings > API and update it in the other system.",
        "Check that the webhook URL uses HTTPS and that the token has not expired.",
        "Reinstall the Slack app and pick the channel again in Integrations.",
        "Reconnect the Zapier account and select the workspace from the list.",
        "Make sure the integration user has the API access role assigned.",
        "Send a test event from the Integrations page and confirm it arrives.",
        "Look at the delivery log for the exact response code of each call.",
    ],
    "export": [
        "Select at least one column in the export dialog before you start the export.",
        "Set the page size to A4 or Letter under Export settings to keep the last page.",
        "Re-enter the storage bucket credentials under Settings > Exports > Destinations.",
        "Choose ISO 8601 as the date format so spreadsheets read the columns correctly.",
        "Run the export again and download it from the Exports history page.",
        "Split very large exports by month to stay under the file size limit.",
        "Check the export log for rows that were skipped and why.",
    ],
}
OPENINGS = ("Hi,", "Hello support,", "Good morning,", "Hi team,", "Dear Acme support,", "Hey,")
CLOSINGS = (
    "Thanks in advance.",
    "Please help, this is urgent.",
    "Kind regards.",
    "Thank you for your help.",
    "Looking forward to your reply.",
    "Cheers.",
)
DETAILS = (
    "It started after the update on Monday.",
    "This affects about twenty people in our team.",
    "We already tried logging out and back in.",
    "Nothing changed on our side as far as I know.",
    "The problem happens in Chrome and in Firefox.",
    "It worked fine until last Friday.",
    "Our admin is on holiday, so I am writing myself.",
)
JUNK_SLANG = (
    "yo app broke lol fix it asap!!!",
    "ur product sux cant login smh",
    "bruh nothing works again",
    "plz halp its busted fr fr",
)
JUNK_OFF_TOPIC = (
    "What is the best pizza place near your office?",
    "Can you recommend a good movie for the weekend?",
    "Who won the football game last night?",
    "I am selling a used bicycle, are you interested?",
)
JUNK_FOREIGN = (
    (
        "Bonjour, je ne peux plus me connecter à mon compte depuis hier soir. Pouvez-vous m'aider ?",
        "Merci de réinitialiser votre mot de passe depuis la page de connexion.",
    ),
    (
        "Hallo, unser Export nach Excel funktioniert seit dem letzten Update nicht mehr richtig.",
        "Bitte wählen Sie das Datumsformat ISO 8601 in den Exporteinstellungen.",
    ),
    (
        "Hola, la sincronización de contactos con nuestro servidor de correo ha dejado de funcionar.",
        "Vuelva a conectar la cuenta de correo en Configuración > Integraciones.",
    ),
)
PII_TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "STREET_ADDRESS",
             "IP_ADDRESS", "ACCOUNT_ID")  # fmt: skip


@dataclass(frozen=True)
class Mix:
    """Share of each kind of row (the rest are clean tickets)."""

    exact_duplicate: float = 0.05
    near_duplicate: float = 0.05
    mislabeled: float = 0.04
    junk: float = 0.06  # split evenly over the six junk kinds
    pii_card: float = 0.15
    pii_address: float = 0.2
    pii_ip: float = 0.15
    pii_account: float = 0.3


@dataclass
class Ticket:
    ticket_id: str
    product: str
    category: str
    query: str
    solution: str
    #: planted PII: type -> values, per turn ("user" / "assistant")
    pii: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "product": self.product,
            "category": self.category,
            "messages": [
                {"role": "user", "content": self.query},
                {"role": "assistant", "content": self.solution},
            ],
        }

    def pii_truth(self) -> list[dict[str, str]]:
        return [
            {"type": kind, "turn": turn, "value": value}
            for kind, items in self.pii.items()
            for turn, value in items
        ]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return digits + str((10 - total % 10) % 10)


class TicketGenerator:
    """Makes tickets one at a time from ``seed``; see the module docstring."""

    def __init__(self, seed: int = 0, mix: Mix | None = None) -> None:
        self.rng = random.Random(seed)
        self.mix = mix or Mix()

    # --- PII pieces ---
    def _person(self) -> tuple[str, str]:
        return self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)

    def _phone(self) -> str:
        r = self.rng
        number = (
            f"{r.choice(AREA_CODES)}-{r.randint(2, 9)}{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        )
        return r.choice((f"({number[:3]}) {number[4:]}", number, f"+1 {number}"))

    def _card(self) -> str:
        r = self.rng
        raw = _luhn_complete(r.choice(("4", "51", "53", "55")), 16, r)
        return " ".join(raw[i : i + 4] for i in range(0, 16, 4)) if r.random() < 0.5 else raw

    def _address(self) -> str:
        r = self.rng
        return f"{r.randint(10, 9899)} {r.choice(STREETS)}, {r.choice(CITIES)}"

    def _ip(self) -> str:
        r = self.rng
        return f"{r.choice((10, 172, 192, 84, 203))}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _account(self) -> str:
        return f"ACCT-{self.rng.randint(100000, 999999)}"

    # --- one clean ticket ---
    def ticket(self, index: int) -> Ticket:
        r, mix = self.rng, self.mix
        canonical = r.choice(sorted(PRODUCTS))
        product = r.choice(PRODUCTS[canonical])
        category = r.choice(CATEGORIES)
        first, last = self._person()
        agent_first, agent_last = self._person()
        email = f"{first.lower()}.{last.lower()}@{r.choice(DOMAINS)}"
        phone = self._phone()
        pii: dict[str, list[tuple[str, str]]] = {
            "PERSON": [("user", f"{first} {last}"), ("assistant", first),
                       ("assistant", f"{agent_first} {agent_last}")],
            "EMAIL_ADDRESS": [("user", email)],
            "PHONE_NUMBER": [("user", phone)],
        }  # fmt: skip
        parts = [
            r.choice(OPENINGS),
            f"this is {first} {last} from {r.choice(COMPANIES)}.",
            _sentence(r.choice(PROBLEMS[category]).format(product=product)),
            r.choice(DETAILS),
        ]
        if r.random() < mix.pii_account:
            account = self._account()
            parts.append(f"Our account id is {account}.")
            pii["ACCOUNT_ID"] = [("user", account)]
        if r.random() < mix.pii_card:
            card = self._card()
            parts.append(f"The card we used is {card}.")
            pii["CREDIT_CARD"] = [("user", card)]
        if r.random() < mix.pii_address:
            address = self._address()
            parts.append(f"Our office is at {address}.")
            pii["STREET_ADDRESS"] = [("user", address)]
        if r.random() < mix.pii_ip:
            ip = self._ip()
            parts.append(f"The requests come from IP {ip}.")
            pii["IP_ADDRESS"] = [("user", ip)]
        parts.append(f"You can reach me at {email} or call {phone}.")
        parts.append(r.choice(CLOSINGS))
        steps = r.sample(STEPS[category], k=r.randint(3, 5))
        solution = "\n".join(
            [f"Hi {first}, thanks for reaching out about {product}."]
            + [f"{i}. {step.format(product=product)}" for i, step in enumerate(steps, 1)]
            + [f"Best regards, {agent_first} {agent_last}, Acme Support"]
        )
        return Ticket(f"T{index:07d}", product, category, " ".join(parts), solution, pii)

    def near_copy(self, ticket: Ticket, index: int) -> Ticket:
        """A resubmission: the same ticket with one or two small edits."""
        r = self.rng
        query = ticket.query
        edits = [
            lambda q: q.replace("Hi,", "Hello,", 1) if "Hi," in q else "Hello again. " + q,
            lambda q: q + " Any update?",
            lambda q: q.replace(" the ", " teh ", 1),
            lambda q: q.replace(".", "!", 1),
        ]
        for edit in r.sample(edits, k=r.randint(1, 2)):
            query = edit(query)
        return Ticket(
            f"T{index:07d}",
            ticket.product,
            ticket.category,
            query,
            ticket.solution,
            ticket.pii,
        )

    # --- the dirty stream ---
    def lines(self, rows: int) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``rows`` output lines (bytes, without newline) with their ground-truth entries."""
        r, mix = self.rng, self.mix
        pool: list[tuple[int, Ticket]] = []  # recent clean tickets that duplicates copy
        junk_kinds = ("empty", "slang", "off_topic", "foreign", "truncated_json", "invalid_utf8")
        for line in range(1, rows + 1):
            roll = r.random()
            truth: dict[str, Any] = {"line": line}
            if roll < mix.junk:
                kind = junk_kinds[int(roll / mix.junk * len(junk_kinds))]
                data = self._junk(kind, line)
                truth.update(kind="junk", junk=kind, pii=[])
                yield data, truth
                continue
            roll -= mix.junk
            if pool and roll < mix.exact_duplicate:
                src_line, src = r.choice(pool)
                truth.update(
                    kind="exact_duplicate", duplicate_of_line=src_line, pii=src.pii_truth()
                )
                yield json.dumps(src.record(), ensure_ascii=False).encode(), truth
                continue
            roll -= mix.exact_duplicate
            if pool and roll < mix.near_duplicate:
                src_line, src = r.choice(pool)
                copy = self.near_copy(src, line)
                truth.update(
                    kind="near_duplicate", duplicate_of_line=src_line, pii=copy.pii_truth()
                )
                yield json.dumps(copy.record(), ensure_ascii=False).encode(), truth
                continue
            roll -= mix.near_duplicate
            ticket = self.ticket(line)
            truth.update(kind="clean", pii=ticket.pii_truth(), category=ticket.category)
            if roll < mix.mislabeled:
                wrong = r.choice([c for c in CATEGORIES if c != ticket.category])
                truth.update(kind="mislabeled", labeled=wrong)
                ticket.category = wrong
            pool.append((line, ticket))
            if len(pool) > 500:
                pool.pop(r.randrange(len(pool)))
            yield json.dumps(ticket.record(), ensure_ascii=False).encode(), truth

    def _junk(self, kind: str, line: int) -> bytes:
        r = self.rng
        tid = f"T{line:07d}"

        def chat(user: str, assistant: str) -> bytes:
            rec = {"ticket_id": tid, "product": "AcmeCRM", "category": r.choice(CATEGORIES),
                   "messages": [{"role": "user", "content": user},
                                {"role": "assistant", "content": assistant}]}  # fmt: skip
            return json.dumps(rec, ensure_ascii=False).encode()

        if kind == "empty":
            return chat("", "")
        if kind == "slang":
            return chat(r.choice(JUNK_SLANG), "k")
        if kind == "off_topic":
            return chat(r.choice(JUNK_OFF_TOPIC), "Sorry, we can only help with Acme products.")
        if kind == "foreign":
            return chat(*r.choice(JUNK_FOREIGN))
        if kind == "truncated_json":
            full = self.ticket(line).record()
            text = json.dumps(full, ensure_ascii=False)
            return text[: r.randint(10, len(text) // 2)].encode()
        # invalid_utf8: a valid record whose bytes are broken in the middle of the text
        good = json.dumps(self.ticket(line).record(), ensure_ascii=False).encode()
        cut = len(good) // 2
        return good[:cut] + b"\xff\xfe" + good[cut:]

    def preference_pairs(self, rows: int) -> Iterator[dict[str, str]]:
        """Prompt / chosen / rejected: the step-by-step answer beats a vague or wrong one."""
        r = self.rng
        vague = (
            "Please try again later.",
            "Have you tried turning it off and on again?",
            "This is a known issue. We are working on it.",
            "Please contact your administrator.",
        )
        for i in range(rows):
            t = self.ticket(i + 1)
            wrong_cat = r.choice([c for c in CATEGORIES if c != t.category])
            wrong = "\n".join(f"{n}. {s}" for n, s in enumerate(r.sample(STEPS[wrong_cat], 2), 1))
            rejected = r.choice(vague) if r.random() < 0.5 else wrong.format(product=t.product)
            yield {"prompt": t.query, "chosen": t.solution, "rejected": rejected}


def write_tickets(out_dir: Path, rows: int, *, seed: int = 0, name: str = "tickets") -> Path:
    """Write ``<name>.jsonl`` and ``<name>.truth.jsonl`` under ``out_dir``; returns the data path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = out_dir / f"{name}.jsonl"
    gen = TicketGenerator(seed)
    with data_path.open("wb") as data, (out_dir / f"{name}.truth.jsonl").open("w") as truth:
        for line_bytes, entry in gen.lines(rows):
            data.write(line_bytes + b"\n")
            truth.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return data_path


def write_preferences(
    out_dir: Path, rows: int, *, seed: int = 0, name: str = "preferences"
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.jsonl"
    with path.open("w") as f:
        for pair in TicketGenerator(seed).preference_pairs(rows):
            f.write(json.dumps(pair, ensure_ascii=False) + "\n")
    return path


def read_truth(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows to write (1k .. 1M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--preference", action="store_true", help="write preference pairs")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be >= 1, got {args.rows}")
    if args.preference:
        path = write_preferences(args.out, args.rows, seed=args.seed)
    else:
        path = write_tickets(args.out, args.rows, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
