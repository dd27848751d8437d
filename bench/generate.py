"""A deterministic Singer stream for benchmarks: one SCHEMA, N RECORDs, a STATE every M.

    python bench/generate.py --records 200000 [--state-every 10000] [--seed 42] > stream.jsonl

Ten columns like a typical CRM table: integer key, strings with non-ASCII text, a
number, a boolean, a date-time, nullable string and integer, a nested object (with a
nested object) and an array. The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys

import orjson

SCHEMA = {"type": "object", "properties": {
    "id": {"type": ["integer"]},
    "name": {"type": ["string"]},
    "email": {"type": ["string"]},
    "amount": {"type": ["number"]},
    "is_active": {"type": ["boolean"]},
    "updated_at": {"type": ["string"], "format": "date-time"},
    "note": {"type": ["string", "null"]},
    "quantity": {"type": ["integer", "null"]},
    "address": {"type": ["object", "null"], "properties": {
        "street": {"type": ["string"]}, "city": {"type": ["string"]},
        "geo": {"type": ["object"], "properties": {"lat": {"type": ["number"]},
                                                    "lon": {"type": ["number"]}}}}},
    "tags": {"type": ["array", "null"], "items": {"type": ["string"]}},
}}
NAMES = ["Ana Horvat", "Björn Müller", "Chloé Dubois", "Łukasz Nowak", "Ιωάννης Παππάς",
         "José García", "李 王", "Мария Иванова", "Søren O'Brien", "Zoë Tanaka"]
CITIES = ["Zagreb", "München", "São Paulo", "Kraków", "Zürich", "Tōkyō", "Αθήνα"]
WORDS = ["alpha", "ünïcødé", "quote \"q\"", "comma, sep", "tab\there", "new\nline", "日本語"]
TAGS = ["new", "vip", "churned", "trial", "enterprise", "eu", "apac"]


def pools(rng: random.Random, size: int = 4096) -> list[dict]:
    """Pre-built partial records; each generated record picks one and adds id and time."""
    out = []
    for i in range(size):
        name = rng.choice(NAMES)
        out.append({
            "name": name,
            "email": f"user{i}@example.com",
            "amount": round(rng.uniform(-1000, 100000), 2),
            "is_active": rng.random() < 0.5,
            "note": None if rng.random() < 0.3 else " ".join(rng.sample(WORDS, 3)),
            "quantity": None if rng.random() < 0.1 else rng.randint(0, 10**6),
            "address": None if rng.random() < 0.05 else {
                "street": f"{rng.randint(1, 999)} Main St", "city": rng.choice(CITIES),
                "geo": {"lat": round(rng.uniform(-90, 90), 6),
                        "lon": round(rng.uniform(-180, 180), 6)}},
            "tags": None if rng.random() < 0.1 else rng.sample(TAGS, rng.randint(0, 3)),
        })
    return out


def generate(out, records: int, state_every: int, seed: int, stream: str = "customers") -> None:
    rng = random.Random(seed)
    partial = pools(rng)
    ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    out.write(orjson.dumps({"type": "SCHEMA", "stream": stream, "schema": SCHEMA,
                            "key_properties": ["id"]}) + b"\n")
    buf = []
    for i in range(1, records + 1):
        ts += dt.timedelta(seconds=1 + rng.getrandbits(2))
        rec = {"id": i, **partial[rng.getrandbits(12)], "updated_at": ts.isoformat()}
        buf.append(orjson.dumps({"type": "RECORD", "stream": stream, "record": rec}))
        if i % state_every == 0 or i == records:
            buf.append(orjson.dumps({"type": "STATE", "value": {"bookmarks": {stream: {
                "replication_key_value": ts.isoformat(), "last_id": i}}}}))
        if len(buf) >= 2048:
            out.write(b"\n".join(buf) + b"\n")
            buf.clear()
    if buf:
        out.write(b"\n".join(buf) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--state-every", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    generate(sys.stdout.buffer, args.records, args.state_every, args.seed)


if __name__ == "__main__":
    main()
