"""A stream -> one Graphite Note dataset: columns from the schema, batches as dataset-fill.

Column mapping (neutral type from `target_core.columns` -> Graphite Note):

| neutral  | type      | subtype  | format        | values sent                      |
|----------|-----------|----------|---------------|----------------------------------|
| integer  | measure   | numeric  | `#,###`       | numbers                          |
| number   | measure   | numeric  | `#,###.##`    | numbers                          |
| datetime | dimension | datetime | `Y-m-d H:i:s` | `YYYY-MM-DD HH:MM:SS`, UTC       |
| date     | dimension | date     | `Y-m-d`       | `YYYY-MM-DD`                     |
| boolean  | dimension | text     |               | `true` / `false`                 |
| json     | dimension | text     |               | JSON text of the object or array |
| text, time | dimension | text   |               | strings (other values as JSON)   |

Key properties are always dimensions. `column_overrides` can change alias, type, subtype
and format per column; a changed subtype changes how values are converted, and takes the
new subtype's default format unless the override gives one (a `#,###` format on a column
made text would not fit).

Batches are as big as the target's byte budget allows (`batch_size_bytes`, as sent): the
packer reports each batch's compressed size to the budget, a 413 lowers it and re-sends
the refused rows in pieces that fit, a slow answer halves it (`target_core.budget`).
"""

from __future__ import annotations

import base64
import gzip
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from target_core import conversions
from target_core.columns import Column, ColumnType
from target_core.errors import ApiError, PayloadTooLarge
from target_core.rows import Converter
from target_core.sink import CoreSink

if TYPE_CHECKING:
    from target_graphitenote.target import TargetGraphiteNote

_DEFAULTS: dict[ColumnType, tuple[str, str, str | None]] = {
    ColumnType.INTEGER: ("measure", "numeric", "#,###"),
    ColumnType.NUMBER: ("measure", "numeric", "#,###.##"),
    ColumnType.DATETIME: ("dimension", "datetime", "Y-m-d H:i:s"),
    ColumnType.DATE: ("dimension", "date", "Y-m-d"),
    ColumnType.BOOLEAN: ("dimension", "text", None),
    ColumnType.JSON: ("dimension", "text", None),
    ColumnType.TEXT: ("dimension", "text", None),
    ColumnType.TIME: ("dimension", "text", None),
}
_SLICE = 4096
"""Rows joined at a time when compressing a batch."""
_FORMAT_OF_SUBTYPE: dict[str, str | None] = {
    "numeric": "#,###.##", "date": "Y-m-d", "datetime": "Y-m-d H:i:s", "text": None,
}
_BY_SUBTYPE: dict[str, Converter] = {
    "numeric": conversions.number,
    "date": conversions.date_text,
    "datetime": conversions.utc_datetime_text,
    "text": conversions.text,
}
_BY_TYPE: dict[ColumnType, Converter] = {
    ColumnType.BOOLEAN: conversions.boolean_text,
    ColumnType.JSON: conversions.json_text,
}


@dataclass
class DatasetLoad:
    """One stream's load into one dataset during this run (shared by its sink versions)."""

    stream: str
    dataset_code: str | None
    """None until `create_missing_datasets` creates it, with the first batch."""
    replace: bool
    fills: int = 0
    rows: int = 0

    def next_append(self) -> bool:
        """False only for the first fill of a replace (overwrite) run."""
        return not (self.replace and self.fills == 0)


@dataclass(frozen=True)
class PreparedFill:
    """A packed batch: all a fill needs, so the rows themselves can go (memory)."""

    insert_data: str
    rows: int


class GraphiteNoteSink(CoreSink):
    """Batches of rows -> `dataset-fill` calls (gzip + base64 when compressed)."""

    core_target: TargetGraphiteNote
    send_needs_rows = False

    def setup(self) -> None:
        super().setup()
        overrides = self.core_target.overrides_for(self.stream_name)
        self.core_target.check_overrides(self.stream_name, [c.source for c in self.columns])
        self.gn_columns = [self._definition(c, overrides.get(c.source, {})) for c in self.columns]
        self.load = self.core_target.load_for(self.stream_name)

    def _definition(self, column: Column, override: dict[str, Any]) -> dict[str, Any]:
        kind, subtype, fmt = _DEFAULTS[column.type]
        if column.is_key:
            kind = "dimension"
        definition = {"name": column.name, "alias": column.source, "type": kind,
                      "subtype": subtype}
        override = {k: v for k, v in override.items() if v is not None}
        if override.get("subtype", subtype) != subtype and "format" not in override:
            fmt = _FORMAT_OF_SUBTYPE[override["subtype"]]  # the old one may not fit
            if override["subtype"] == "numeric" and column.type is ColumnType.INTEGER:
                fmt = "#,###"
        if fmt:
            definition["format"] = fmt
        definition.update(override)
        return definition

    def converter_for(self, column: Column) -> Converter | None:
        override = self.core_target.overrides_for(self.stream_name).get(column.source, {})
        default_subtype = _DEFAULTS[column.type][1]
        subtype = override.get("subtype") or default_subtype
        if subtype != default_subtype:
            return _BY_SUBTYPE[subtype]
        if column.type in _BY_TYPE:
            return _BY_TYPE[column.type]
        validated = self.validate_schema
        if subtype == "numeric" and validated:
            return None  # the validator already proved these are numbers (or null)
        if column.type is ColumnType.TEXT and validated and column.json_types == ("string",):
            return None
        return _BY_SUBTYPE[subtype]

    # -- upload (packer and sender threads) --------------------------------------------

    def prepare_batch(self, rows: list[bytes]) -> PreparedFill:
        """The `insert-data` string: JSON rows, gzip + base64 when compressed."""
        config = self.core_target.config
        encoded = sum(map(len, rows)) + len(rows) + 1  # rows, commas, brackets
        if not config["compress"]:
            insert_data = f"[{b','.join(rows).decode()}]"
        else:  # streamed into the compressor in slices: no joined copy of the whole batch
            packer = zlib.compressobj(config["compression_level"], zlib.DEFLATED, 31)
            parts = [packer.compress(b"[")]
            for start in range(0, len(rows), _SLICE):
                comma = b"," if start else b""
                parts.append(packer.compress(comma + b",".join(rows[start:start + _SLICE])))
            parts += [packer.compress(b"]"), packer.flush()]
            insert_data = base64.b64encode(b"".join(parts)).decode("ascii")
        fill = PreparedFill(insert_data, len(rows))
        self.core_target.budget.measured(encoded, self._request_size(fill))
        return fill

    def _request_size(self, fill: PreparedFill) -> int:
        """Bytes of the dataset-fill request carrying it (close enough: the columns and the
        fixed keys, plus JSON escaping of uncompressed rows)."""
        data = fill.insert_data
        escaped = data.count('"') if not self.core_target.config["compress"] else 0
        return len(data) + escaped + len(str(self.gn_columns)) + 200

    def _rows_of(self, fill: PreparedFill) -> list[bytes]:
        """The rows back from a prepared fill (only to split it after a 413)."""
        data = fill.insert_data.encode()
        if self.core_target.config["compress"]:
            data = gzip.decompress(base64.b64decode(data))
        return [bytes(row) for row in msgspec.json.decode(data, type=list[msgspec.Raw])]

    def _send_in_pieces(self, rows: list[bytes] | None, fill: PreparedFill, size: int) -> None:
        """Send a batch as several, each sized by the budget as learnt so far."""
        rows = rows if rows is not None else self._rows_of(fill)
        per_row = size / len(rows)
        start = 0
        while start < len(rows):
            step = max(1, min(int(self.core_target.budget.request_bytes / per_row),
                              (len(rows) + 1) // 2))  # always smaller than the whole
            part = rows[start:start + step]
            self.send_batch(part, self.prepare_batch(part))
            start += len(part)

    def send_batch(self, rows: list[bytes] | None, fill: PreparedFill) -> None:
        target = self.core_target
        load = self.load
        size = self._request_size(fill)
        if target.budget.known_too_large(size) and fill.rows > 1:
            # packed before a 413 taught the limit: split now instead of being refused
            self._send_in_pieces(rows, fill, size)
            return
        if load.dataset_code is None:
            target.create_dataset(load, self.gn_columns)
        append = load.next_append()
        try:
            count = target.client.fill(load.dataset_code, self.gn_columns, fill.insert_data,
                                       compressed=target.config["compress"], append=append)
        except PayloadTooLarge:
            if fill.rows == 1:
                raise ApiError(f"stream '{self.stream_name}': a single row is larger than "
                               "Graphite Note accepts (HTTP 413)", 413) from None
            target.budget.refused(size)
            self.logger.warning("Stream '%s': Graphite Note refused %d rows as too large "
                                "(HTTP 413); sending them again in smaller batches",
                                self.stream_name, fill.rows)
            self._send_in_pieces(rows, fill, size)
            return
        target.budget.answered_in(target.client.session.last_duration)
        if count is not None and count < fill.rows:
            # Whether rows-count counts this call or the whole dataset, fewer than sent
            # means rows were dropped: acknowledging the batch would move STATE past them.
            raise ApiError(f"stream '{self.stream_name}': Graphite Note acknowledged only "
                           f"{count} of {fill.rows} rows sent to dataset "
                           f"'{load.dataset_code}'; stopping before any later STATE", 200)
        load.fills += 1
        load.rows += fill.rows
