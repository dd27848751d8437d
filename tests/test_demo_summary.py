"""`make demo`'s last step: what landed on each platform, from a real sandbox snapshot.

tests/data/demo_snapshot.json is `target-sandbox show --max-rows 2` after a `make demo` run
(the 200 demo customers in each of the four sandboxes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "demo"))

from summary import summarise  # noqa: E402

SNAPSHOT = json.loads((REPO / "tests" / "data" / "demo_snapshot.json").read_text())


def test_the_summary_names_what_landed_on_every_platform() -> None:
    text, loaded = summarise(SNAPSHOT, "sandbox-dataset", 2)
    assert loaded, text
    heads = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert [head.split(" ", 1)[0] for head in heads] == [
        "Graphite", "DataInsider", "uSmart", "DataTile"]
    assert all("200 rows" in head for head in heads), heads
    assert "output pipeline 'sandbox-pipeline': 1 refreshes" in text


def test_a_platform_without_rows_makes_the_summary_fail() -> None:
    empty = {**SNAPSHOT, "usmart": {"datasets": {}}}
    text, loaded = summarise(empty, "sandbox-dataset", 2)
    assert not loaded
    assert "No uSmart dataset or table holds any rows." in text
