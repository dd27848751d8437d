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
and format per column; a changed subtype changes how values are converted.
"""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from target_core import conversions
from target_core.columns import Column, ColumnType
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
    """Which dataset each stream of the run loads into: mapped, given, or created with the
    stream's first batch. Shared by the stream's sinks and the target's finishing calls."""

    def __init__(self, config: Mapping[str, Any], client: GraphiteNoteClient,
                 logger: logging.Logger) -> None:
        self.config = config
        self.client = client
        self.logger = logger
        self.loads: dict[str, DatasetLoad] = {}

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
        replace = config["load_method"] == "overwrite"
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
                         "overwrite" if replace else "append")
        return load

    def _stream_loading_into(self, code: str) -> str | None:
        return next((s for s, load in self.loads.items() if load.dataset_code == code), None)

    def create_dataset(self, load: DatasetLoad, columns: list[dict[str, Any]]) -> None:
        """Create the stream's dataset (sender thread, first batch: no empty datasets)."""
        name = f"{self.config['dataset_name_prefix']}{load.stream}"
        load.dataset_code = self.client.create_dataset(name, columns)
        self.logger.info("Created %s dataset '%s' with code '%s' for stream '%s'; add it to "
                         "dataset_map to load into the same dataset next time",
                         PLATFORM, name, load.dataset_code, load.stream)


@dataclass(frozen=True)
class GraphiteNoteParts(SinkParts):
    """What a Graphite Note sink is handed by the target."""

    client: GraphiteNoteClient
    datasets: DatasetRegistry
    overrides: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Per property of this stream: alias, type, subtype, format (`column_overrides`)."""
    compress: bool = True
    compression_level: int = 1


class GraphiteNoteSink(CoreSink):
    """Batches of rows -> `dataset-fill` calls (gzip + base64 when compressed)."""

    parts: GraphiteNoteParts

    def setup(self) -> None:
        super().setup()
        overrides = self.parts.overrides
        self.gn_columns = [self._definition(c, overrides.get(c.source, {})) for c in self.columns]
        self.load = self.parts.datasets.load_for(self.stream_name)

    def _definition(self, column: Column, override: dict[str, Any]) -> dict[str, Any]:
        kind, subtype, fmt = _DEFAULTS[column.type]
        if column.is_key:
            kind = "dimension"
        definition = {"name": column.name, "alias": column.source, "type": kind,
                      "subtype": subtype}
        if fmt:
            definition["format"] = fmt
        definition.update({k: v for k, v in override.items() if v is not None})
        return definition

    def converter_for(self, column: Column) -> Converter | None:
        override = self.parts.overrides.get(column.source, {})
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

    def prepare_batch(self, rows: list[bytes]) -> str:
        """The `insert-data` string: JSON rows, gzip + base64 when compressed."""
        payload = b"[" + b",".join(rows) + b"]"
        if not self.parts.compress:
            return payload.decode()
        packed = gzip.compress(payload, compresslevel=self.parts.compression_level, mtime=0)
        return base64.b64encode(packed).decode("ascii")

    def send_batch(self, rows: list[bytes], insert_data: str) -> None:
        parts = self.parts
        load = self.load
        if load.dataset_code is None:
            parts.datasets.create_dataset(load, self.gn_columns)
        append = load.next_append()
        try:
            count = parts.client.fill(load.dataset_code, self.gn_columns, insert_data,
                                      compressed=parts.compress, append=append)
        except PayloadTooLarge:
            if len(rows) == 1:
                raise ApiError(f"stream '{self.stream_name}': a single row is larger than "
                               "Graphite Note accepts (HTTP 413)", 413) from None
            half = len(rows) // 2
            self.logger.warning("Stream '%s': Graphite Note refused %d rows as too large "
                                "(HTTP 413); sending them as two batches of %d and %d",
                                self.stream_name, len(rows), half, len(rows) - half)
            for part in (rows[:half], rows[half:]):
                self.send_batch(part, self.prepare_batch(part))
            return
        if count is not None and count < len(rows):
            # Whether rows-count counts this call or the whole dataset, fewer than sent
            # means rows were dropped: acknowledging the batch would move STATE past them.
            raise ApiError(f"stream '{self.stream_name}': Graphite Note acknowledged only "
                           f"{count} of {len(rows)} rows sent to dataset "
                           f"'{load.dataset_code}'; stopping before any later STATE", 200)
        load.fills += 1
        load.rows += len(rows)
