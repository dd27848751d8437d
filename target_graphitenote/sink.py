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
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from target_core import conversions
from target_core.budget import BatchBudget
from target_core.checkpoint import Checkpoint
from target_core.columns import Column, ColumnType
from target_core.destinations import DestinationRegistry
from target_core.errors import ApiError, ConfigError, PayloadTooLarge
from target_core.rows import Converter
from target_core.sink import CoreSink, SinkParts
from target_graphitenote.client import PLATFORM, GraphiteNoteClient

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


class DatasetRegistry:
    """Which dataset each stream of the run loads into: mapped, given, remembered from an
    earlier run, or created with the stream's first batch. Shared by the stream's sinks
    (one per schema version) and the target's finishing calls."""

    def __init__(self, config: Mapping[str, Any], client: GraphiteNoteClient,
                 checkpoint: Checkpoint, logger: logging.Logger) -> None:
        self.config = config
        self.client = client
        self.checkpoint = checkpoint
        self.logger = logger
        self.loads: dict[str, DatasetLoad] = {}
        self.created = DestinationRegistry(
            config["created_datasets_file"], f"{config['api_url']} user {config['user_code']}")
        """Datasets `create_missing_datasets` made, by name (read and updated each run)."""

    def load_method_for(self, stream: str) -> str:
        return (self.config.get("stream_load_methods") or {}).get(
            stream, self.config["load_method"])

    def load_for(self, stream: str) -> DatasetLoad:
        """The stream's dataset for this run: mapped, given, or created now."""
        if stream in self.loads:
            return self.loads[stream]
        config = self.config
        code = (config.get("dataset_map") or {}).get(stream)
        if code is None and config.get("dataset_code"):
            code = config["dataset_code"]
            if other := self._stream_loading_into(code):
                raise ConfigError(
                    f"dataset_code is for one stream, but streams '{other}' and '{stream}' "
                    "both arrived: map each stream with dataset_map"
                )
        replace = self.load_method_for(stream) == "overwrite"
        if replace:
            # A replace starts with a truncate: a run resumed from a mid-run STATE would
            # wipe what this run loaded. STATE waits for the end from here on.
            self.checkpoint.hold_until_end = True
        if code is None and config["create_missing_datasets"]:
            code = self.created.get(self.dataset_name(stream))
            if code is not None:
                self.logger.info("Stream '%s': dataset '%s' was created by an earlier run "
                                 "(remembered in %s)", stream, code, self.created.path)
        if code is not None and replace and (other := self._stream_loading_into(code)):
            raise ConfigError(
                f"streams '{other}' and '{stream}' are both mapped to "
                f"dataset '{code}': with load_method overwrite each would replace the other's "
                "rows; map them to different datasets"
            )
        if code is None and not config["create_missing_datasets"]:
            raise ConfigError(
                f"no dataset for stream '{stream}': set dataset_code (one stream), "
                f'dataset_map ({{"{stream}": "<dataset code>"}}) or create_missing_datasets'
            )
        load = self.loads[stream] = DatasetLoad(stream, code, replace)
        self.logger.info("Stream '%s' -> %s dataset %s (%s)", stream, PLATFORM,
                         f"'{code}'" if code else "to be created with its first batch",
                         "overwrite" if replace else "append-only")
        return load

    def _stream_loading_into(self, code: str) -> str | None:
        return next((s for s, load in self.loads.items() if load.dataset_code == code), None)

    def dataset_name(self, stream: str) -> str:
        return f"{self.config['dataset_name_prefix']}{stream}"

    def create_dataset(self, load: DatasetLoad, columns: list[dict[str, Any]]) -> None:
        """Create the stream's dataset (sender thread, first batch: no empty datasets)."""
        name = self.dataset_name(load.stream)
        load.dataset_code = self.client.create_dataset(name, columns)
        self.created.remember(name, load.dataset_code)
        self.logger.info("Created %s dataset '%s' with code '%s' for stream '%s'; remembered "
                         "in %s, so later runs load into it", PLATFORM, name,
                         load.dataset_code, load.stream, self.created.path)


class ColumnOverrides:
    """`column_overrides` per stream, and warnings for the ones that never applied."""

    def __init__(self, config: Mapping[str, Any], logger: logging.Logger) -> None:
        self.overrides: Mapping[str, Mapping[str, dict[str, Any]]] = (
            config.get("column_overrides") or {})
        self.logger = logger
        self._used: set[tuple[str, str]] = set()
        self._streams_seen: set[str] = set()

    def for_stream(self, stream: str) -> dict[str, dict[str, Any]]:
        return {**self.overrides.get("*", {}), **self.overrides.get(stream, {})}

    def check(self, stream: str, properties: list[str]) -> None:
        """Warn about overrides naming properties this stream's SCHEMA lacks."""
        self._streams_seen.add(stream)
        missing = [name for name in self.overrides.get(stream, {}) if name not in properties]
        if missing:
            self.logger.warning("column_overrides for stream '%s' name properties its SCHEMA "
                                "does not have: %s (ignored)", stream, ", ".join(missing))
        for scope in (stream, "*"):
            for name in self.overrides.get(scope, {}):
                if name in properties:
                    self._used.add((scope, name))

    def warn_unused(self) -> None:
        """At the end: overrides for streams that never came, or `*` names none had."""
        unseen = [s for s in self.overrides if s != "*" and s not in self._streams_seen]
        if unseen:
            self.logger.warning("column_overrides name streams that never arrived: %s",
                                ", ".join(unseen))
        unused = [n for n in self.overrides.get("*", {}) if ("*", n) not in self._used]
        if unused and self._streams_seen:
            self.logger.warning('column_overrides "*" name properties no stream had: %s',
                                ", ".join(unused))


@dataclass(frozen=True)
class GraphiteNoteParts(SinkParts):
    """What a Graphite Note sink is handed by the target."""

    client: GraphiteNoteClient
    datasets: DatasetRegistry
    overrides: ColumnOverrides
    budget: BatchBudget = field(kw_only=True)  # type: ignore[assignment]
    """Always set: fills are sized by request bytes."""
    compress: bool = True
    compression_level: int = 1


@dataclass(frozen=True)
class PreparedFill:
    """A packed batch: all a fill needs, so the rows themselves can go (memory)."""

    insert_data: str
    rows: int


class GraphiteNoteSink(CoreSink):
    """Batches of rows -> `dataset-fill` calls (gzip + base64 when compressed)."""

    parts: GraphiteNoteParts
    send_needs_rows = False

    def setup(self) -> None:
        super().setup()
        overrides = self.parts.overrides.for_stream(self.stream_name)
        self.parts.overrides.check(self.stream_name, [c.source for c in self.columns])
        self.gn_columns = [self._definition(c, overrides.get(c.source, {})) for c in self.columns]
        self.load = self.parts.datasets.load_for(self.stream_name)

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
        override = self.parts.overrides.for_stream(self.stream_name).get(column.source, {})
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
        parts = self.parts
        encoded = sum(map(len, rows)) + len(rows) + 1  # rows, commas, brackets
        if not parts.compress:
            insert_data = f"[{b','.join(rows).decode()}]"
        else:  # streamed into the compressor in slices: no joined copy of the whole batch
            packer = zlib.compressobj(parts.compression_level, zlib.DEFLATED, 31)
            chunks = [packer.compress(b"[")]
            for start in range(0, len(rows), _SLICE):
                comma = b"," if start else b""
                chunks.append(packer.compress(comma + b",".join(rows[start:start + _SLICE])))
            chunks += [packer.compress(b"]"), packer.flush()]
            insert_data = base64.b64encode(b"".join(chunks)).decode("ascii")
        fill = PreparedFill(insert_data, len(rows))
        parts.budget.measured(encoded, self._request_size(fill))
        return fill

    def _request_size(self, fill: PreparedFill) -> int:
        """Bytes of the dataset-fill request carrying it (close enough: the columns and the
        fixed keys, plus JSON escaping of uncompressed rows)."""
        data = fill.insert_data
        escaped = data.count('"') if not self.parts.compress else 0
        return len(data) + escaped + len(str(self.gn_columns)) + 200

    def _rows_of(self, fill: PreparedFill) -> list[bytes]:
        """The rows back from a prepared fill (only to split it after a 413)."""
        data = fill.insert_data.encode()
        if self.parts.compress:
            data = gzip.decompress(base64.b64decode(data))
        return [bytes(row) for row in msgspec.json.decode(data, type=list[msgspec.Raw])]

    def _send_in_pieces(self, rows: list[bytes] | None, fill: PreparedFill, size: int) -> None:
        """Send a batch as several, each sized by the budget as learnt so far."""
        rows = rows if rows is not None else self._rows_of(fill)
        per_row = size / len(rows)
        start = 0
        while start < len(rows):
            step = max(1, min(int(self.parts.budget.request_bytes / per_row),
                              (len(rows) + 1) // 2))  # always smaller than the whole
            part = rows[start:start + step]
            self.send_batch(part, self.prepare_batch(part))
            start += len(part)

    def send_batch(self, rows: list[bytes] | None, fill: PreparedFill) -> None:
        parts = self.parts
        load = self.load
        size = self._request_size(fill)
        if parts.budget.known_too_large(size) and fill.rows > 1:
            # packed before a 413 taught the limit: split now instead of being refused
            self._send_in_pieces(rows, fill, size)
            return
        if load.dataset_code is None:
            parts.datasets.create_dataset(load, self.gn_columns)
        append = load.next_append()
        try:
            count = parts.client.fill(load.dataset_code, self.gn_columns, fill.insert_data,
                                      compressed=parts.compress, append=append)
        except PayloadTooLarge:
            if fill.rows == 1:
                raise ApiError(f"stream '{self.stream_name}': a single row is larger than "
                               "Graphite Note accepts (HTTP 413)", 413) from None
            parts.budget.refused(size)
            self.logger.warning("Stream '%s': Graphite Note refused %d rows as too large "
                                "(HTTP 413); sending them again in smaller batches",
                                self.stream_name, fill.rows)
            self._send_in_pieces(rows, fill, size)
            return
        parts.budget.answered_in(parts.client.session.last_duration)
        if count is not None and count < fill.rows:
            # Whether rows-count counts this call or the whole dataset, fewer than sent
            # means rows were dropped: acknowledging the batch would move STATE past them.
            raise ApiError(f"stream '{self.stream_name}': Graphite Note acknowledged only "
                           f"{count} of {fill.rows} rows sent to dataset "
                           f"'{load.dataset_code}'; stopping before any later STATE", 200)
        load.fills += 1
        load.rows += fill.rows
