"""SPSS files for the DataTile tests, written by the target's own writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from target_core.spool import string_widths
from target_datatile.spss import (
    Compression,
    HeaderFacts,
    SpssFileWriter,
    spss_record_batch,
    spss_schema,
)
from target_datatile.variables import converter_for, datatile_columns

PEOPLE_SCHEMA: dict[str, Any] = {
    "properties": {
        "id": {"type": "integer"},
        "full name": {"type": ["string", "null"]},
        "active": {"type": ["boolean", "null"]},
        "born": {"type": ["string", "null"], "format": "date"},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
        "score": {"type": ["number", "null"]},
        "tags": {"type": ["array", "null"]},
    }
}
PEOPLE = [
    {"id": 1, "full name": "Ana Müller", "active": True, "born": "1990-05-17",
     "seen_at": "2024-02-29T23:59:58.250000Z", "score": 12.5, "tags": ["a", "ü"]},
    {"id": 2, "full name": None, "active": False, "born": "0001-01-01",
     "seen_at": "2024-03-01T01:00:00+02:00", "score": None, "tags": None},
    {"id": 3, "full name": "東京 🙂", "active": None, "born": None, "seen_at": None,
     "score": -0.125, "tags": []},
]


def write_spss(path: Path, schema: dict[str, Any], records: list[dict[str, Any]],
               compression: Compression = "zlib", batch_rows: int = 2) -> Path:
    """Records -> converted rows -> an Arrow batch measured as the core's spool does ->
    written in batches of `batch_rows`."""
    columns = datatile_columns(schema, ["id"])
    converters = [converter_for(column) for column in columns]
    rows = [[convert(record.get(column.source)) for convert, column in
             zip(converters, columns, strict=True)] for record in records]
    widths = string_widths(spss_record_batch(spss_schema(columns), rows))
    facts = HeaderFacts.from_widths(len(rows), columns, widths)
    writer = SpssFileWriter(path, columns, facts, compression=compression)
    for start in range(0, len(rows), batch_rows):
        writer.write_batch(rows[start:start + batch_rows])
    writer.close()
    return path
