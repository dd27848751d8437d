"""Writes demo/customers.jsonl: 200 made-up customers for the Meltano demo and its test.

Deterministic (fixed seed), so rerunning it reproduces the committed file byte for byte:

    python3 demo/make_customers.py            # rewrites demo/customers.jsonl
    python3 demo/make_customers.py --check    # exits 1 if the committed file differs

Every record has the same keys, so tap-jsonl infers one schema: id (integer), name, email,
country (strings), signup_at (date-time with a UTC offset, not always Z), lifetime_value
(number), is_active (boolean), tags (array, sometimes empty) and address (object, null for
some customers; its `line2` is often null).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import unicodedata
from pathlib import Path

SEED = 20240611
COUNT = 200
OUT = Path(__file__).with_name("customers.jsonl")

FIRST = [
    "Ana", "Ben", "Chloé", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ivan", "Jules",
    "Kofi", "Lena", "Marta", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tariq",
    "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoë", "Łukasz", "Søren", "Aiko", "Mateo",
]
LAST = [
    "Novak", "Horvat", "García", "Müller", "Rossi", "Kowalski", "Jensen", "Silva", "Okafor",
    "Tanaka", "Dubois", "Kovačević", "O'Brien", "Nguyen", "Larsen", "Petrović", "Costa",
    "Schmidt", "Andersson", "Moreau", "Fischer", "Ivanova", "Haddad", "Kim", "Brennan",
]
# country code -> (cities, UTC offset of the signup timestamps, postal code pattern)
COUNTRIES = {
    "HR": (["Zagreb", "Split", "Rijeka", "Osijek"], "+01:00", "#####"),
    "DE": (["Berlin", "Hamburg", "München", "Köln"], "+01:00", "#####"),
    "US": (["Austin", "Denver", "Portland", "Boston"], "-05:00", "#####"),
    "GB": (["London", "Leeds", "Bristol", "Glasgow"], "Z", "?# #??"),
    "JP": (["Tokyo", "Osaka", "Sapporo"], "+09:00", "###-####"),
    "BR": (["São Paulo", "Recife", "Curitiba"], "-03:00", "#####-###"),
    "IN": (["Pune", "Chennai", "Bengaluru"], "+05:30", "######"),
    "FR": (["Lyon", "Nantes", "Lille"], "+01:00", "#####"),
}
STREETS = ["Main St", "Ilica", "Hauptstraße", "Rua Augusta", "High Street", "Rue de la Paix",
           "Sakura-dori", "MG Road", "Oak Avenue", "Vukovarska"]
TAGS = ["newsletter", "vip", "b2b", "trial", "churn-risk", "beta", "referral", "enterprise"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example"]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


def _postal(rng: random.Random, pattern: str) -> str:
    return "".join(
        str(rng.randint(0, 9)) if c == "#" else rng.choice("ABCDEFGHJKLMNPRSTUWXYZ") if c == "?"
        else c
        for c in pattern
    )


def _signup(rng: random.Random, offset: str) -> str:
    start = dt.datetime(2021, 1, 1)
    moment = start + dt.timedelta(seconds=rng.randint(0, 4 * 365 * 86400))
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + offset


def customer(rng: random.Random, customer_id: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    country = rng.choice(list(COUNTRIES))
    cities, offset, postal = COUNTRIES[country]
    address = None
    if rng.random() > 0.12:
        address = {
            "line1": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
            "line2": f"Apt {rng.randint(1, 40)}" if rng.random() < 0.3 else None,
            "city": rng.choice(cities),
            "postal_code": _postal(rng, postal),
        }
    return {
        "id": customer_id,
        "name": f"{first} {last}",
        "email": f"{_ascii(first)}.{_ascii(last)}{customer_id}@{rng.choice(DOMAINS)}",
        "country": country,
        "signup_at": _signup(rng, offset),
        "lifetime_value": round(rng.uniform(0.5, 8000), 2),
        "is_active": rng.random() < 0.8,
        "tags": sorted(rng.sample(TAGS, rng.choice([0, 1, 1, 2, 3]))),
        "address": address,
    }


def render() -> str:
    rng = random.Random(SEED)
    lines = [json.dumps(customer(rng, 1000 + n), ensure_ascii=False) for n in range(COUNT)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs from make_customers.py output'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {COUNT} customers to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
