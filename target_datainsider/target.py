"""target-datainsider: load any Singer tap's streams into DataInsider (Rocket.BI): warehouse
tables (`mode: warehouse`, the batch-call path) or Data Lake Parquet files (`mode: lake`,
the core's file path). One class for both, since the mode is a setting: each method that
differs between the paths picks its path by `self.lake`."""

from __future__ import annotations

import sys
from typing import IO, Any

from singer_sdk import typing as th

from target_core.errors import ConfigError
from target_core.filesink import FileLoad, FileSink, FileSinkParts
from target_core.filetarget import FileTarget
from target_core.http import ApiSession, RateLimiter
from target_core.settings import (
    api_session,
    check_connection_settings,
    connection_settings,
    load_method_setting,
)
from target_core.sink import SinkParts
from target_core.target import CoreTarget
from target_datainsider.client import PLATFORM, DataInsiderClient, LakeClient
from target_datainsider.sink import (
    NAME,
    DataInsiderParts,
    DataInsiderSink,
    LakeLoad,
    TableRegistry,
    lake_directory,
    new_budget,
)

MODES = ("warehouse", "lake")
KEY_PROPERTIES_AS = ("primary_keys", "none")


class TargetDataInsider(FileTarget):
    """Singer target for DataInsider warehouse tables (schema + batch ingestion API) or
    Data Lake directories (file sync of Parquet files)."""

    name = "target-datainsider"
    package_name = "singer-analytics-targets"
    default_sink_class = DataInsiderSink

    config_jsonschema = th.PropertiesList(
        th.Property("api_url", th.StringType, required=True,
                    description="API base URL, https://<client>.datainsider.co/api. https "
                                "only, except loopback addresses (the sandbox: "
                                "http://127.0.0.1:8765/datainsider/api)."),
        th.Property("api_key", th.StringType, required=True, secret=True,
                    description="DataInsider API key for the warehouse routes (Settings > "
                                "API Key Management); it needs permission to create and edit "
                                "databases. Never logged."),
        th.Property("lake_api_key", th.StringType, secret=True,
                    description="Key of the Data Lake file sync (one key per server, in its "
                                "file_sync config); defaults to api_key. Never logged."),
        th.Property("mode", th.StringType, default="warehouse", allowed_values=list(MODES),
                    description="warehouse: each stream becomes a table (schema API + batch "
                                "ingestion). lake: each stream becomes Parquet files in a "
                                "Data Lake directory (file sync API)."),
        th.Property("database", th.StringType,
                    description="Warehouse mode: the database of streams table_map does not "
                                "name (created when missing). Letters, digits and _."),
        th.Property("table_map", th.ObjectType(additional_properties=th.StringType),
                    description='Warehouse mode: stream -> "database.table" (or "table", in '
                                'database), e.g. {"public-orders": "shop.orders"}. A table '
                                "defaults to the stream name, normalised."),
        th.Property("lake_path_prefix", th.StringType, default="/data/singer",
                    description="Lake mode: the directory under which each stream gets its "
                                "own (prefix/<stream>)."),
        th.Property("lake_path_map", th.ObjectType(additional_properties=th.StringType),
                    description='Lake mode: stream -> absolute lake directory, e.g. '
                                '{"orders": "/data/shop/orders"}. Takes precedence over '
                                "lake_path_prefix."),
        load_method_setting("append-only: rows are added. overwrite: each stream's table "
                            "is truncated before its first batch of the run (lake: a "
                            "FullSync replaces the directory)."),
        th.Property("key_properties_as", th.StringType, default="primary_keys",
                    allowed_values=list(KEY_PROPERTIES_AS),
                    description="primary_keys: a stream's key properties become the primary "
                                "keys and order-bys of a replacing table (ClickHouse "
                                "ReplacingMergeTree: rows with the same key are merged "
                                "eventually). none: a plain table without keys."),
        th.Property("batch_size_rows", th.IntegerType, default=10_000,
                    description="Most rows per ingestion call; batches also end before 4 MB "
                                "of rows, so every request stays under DataInsider's 5 MB."),
        *connection_settings(rate_limit_default=0,
                             rate_limit_note="DataInsider documents no limit, hence 0 by default"),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tables: TableRegistry | None = None
        self._client: DataInsiderClient | None = None
        self._lake_client: LakeClient | None = None
        self._lake_paths: dict[str, str] = {}
        self.lake = False
        super().__init__(*args, **kwargs)

    def check_config(self) -> None:
        config = self.config
        check_connection_settings(config)
        if config["batch_size_rows"] < 1:
            raise ConfigError("batch_size_rows must be at least 1")
        if config.get("database") is not None:
            _check_name(config["database"], "database")
        for stream, target in (config.get("table_map") or {}).items():
            for part in target.split("."):
                _check_name(part, f"table_map['{stream}'] ({target!r})")
            if target.count(".") > 1:
                raise ConfigError(f"table_map['{stream}'] must be \"database.table\" or "
                                  f"\"table\", got {target!r}")
        for stream, path in {"lake_path_prefix": config["lake_path_prefix"],
                             **(config.get("lake_path_map") or {})}.items():
            if not path.startswith("/") or "//" in path or "/../" in f"{path}/":
                label = stream if stream == "lake_path_prefix" else f"lake_path_map['{stream}']"
                raise ConfigError(f"{label} must be an absolute lake path like /data/db/x, "
                                  f"got {path!r}")
        self.lake = config["mode"] == "lake"
        self.default_sink_class = FileSink if self.lake else DataInsiderSink
        # A replace starts with a truncate (warehouse) or a FullSync of the directory
        # (lake): a run resumed from a mid-run STATE would wipe what the interrupted run
        # loaded and never get it again. STATE waits for the end.
        self.checkpoint.hold_until_end = config["load_method"] == "overwrite"

    @property
    def client(self) -> DataInsiderClient:
        """The warehouse routes, with `api_key`."""
        if self._client is None:
            self._client = DataInsiderClient(self._session(), self.config["api_key"])
        return self._client

    @property
    def lake_client(self) -> LakeClient:
        """The file sync routes, with `lake_api_key` (default `api_key`)."""
        if self._lake_client is None:
            key = self.config.get("lake_api_key") or self.config["api_key"]
            self._lake_client = LakeClient(self._session(), key)
        return self._lake_client

    def _session(self) -> ApiSession:
        return api_session(self.config, platform=PLATFORM, rate_limiter=self.rate_limiter,
                           headers={"User-Agent": f"{self.name}/{self.plugin_version}"})

    @property
    def rate_limiter(self) -> RateLimiter:
        """One limit for every call of the run, whichever client makes it."""
        if not hasattr(self, "_rate_limiter"):
            self._rate_limiter = RateLimiter(self.config["rate_limit_per_minute"])
        return self._rate_limiter

    def api_stats(self) -> tuple[int, float]:
        calls = sum(c.session.calls for c in (self._client, self._lake_client) if c)
        return calls, self.rate_limiter.waited_total

    @property
    def tables(self) -> TableRegistry:
        """The run's stream -> table registry, shared with the sinks."""
        if self._tables is None:
            self._tables = TableRegistry(self.config, self.logger)
        return self._tables

    # -- lake mode: the core's file path -------------------------------------------------

    def open_load(self, stream: str) -> FileLoad:
        directory = lake_directory(stream, self.config)
        replace = self.config["load_method"] == "overwrite"
        other = next((s for s, d in self._lake_paths.items() if d == directory), None)
        if replace and other is not None:
            raise ConfigError(
                f"streams '{other}' and '{stream}' are both mapped to lake directory "
                f"{directory}: with load_method overwrite each FullSync would replace the "
                "other's files; map them to different directories (lake_path_map)")
        self._lake_paths[stream] = directory
        self.logger.info("Stream '%s' -> %s lake directory %s (%s)", stream, PLATFORM,
                         directory, "overwrite: FullSync" if replace else
                         "append: IncrementalSync")
        return LakeLoad(stream, directory, replace, self.lake_client, self.logger,
                        self.acknowledged)

    def listen(self, file_input: IO[str] | None = None) -> None:
        """The run; in warehouse mode with a shorter GIL switch interval (`SWITCH_SECONDS`),
        put back afterwards."""
        if self.lake:
            super().listen(file_input)
            return
        previous = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_SECONDS)
        try:
            super().listen(file_input)
        finally:
            sys.setswitchinterval(previous)

    # -- the two paths ---------------------------------------------------------------------

    def sink_parts(self, stream: str) -> SinkParts:
        if self.lake:
            return FileSinkParts(self.checkpoint, self.uploader, self.files)
        return DataInsiderParts(
            self.checkpoint, self.uploader, client=self.client, tables=self.tables,
            budget=new_budget(), acknowledged=self.acknowledged,
            keys_as_primary_keys=self.config["key_properties_as"] == "primary_keys",
            input_lines=self.message_reader,
        )

    def drain_all(self, *, is_endofpipe: bool = False) -> None:  # type: ignore[misc]
        if self.lake:
            super().drain_all(is_endofpipe=is_endofpipe)  # a signal finishes no file
        else:
            CoreTarget.drain_all(self, is_endofpipe=is_endofpipe)  # buffered batches go

    def finish_streams(self) -> None:
        if self.lake:
            super().finish_streams()  # last files, uploads, sync ends
            return
        for load in self.tables.loads.values():
            if load.batches == 0:
                self.logger.info("Stream '%s': no new records; table %s left as it was",
                                 load.stream, load.qualified)
                continue
            csv_note = f" ({load.csv_batches} as CSV for nulls)" if load.csv_batches else ""
            self.logger.info("Stream '%s': %d rows in %d batches%s to table %s", load.stream,
                             load.rows, load.batches, csv_note, load.qualified)


SWITCH_SECONDS = 0.001
"""The GIL switch interval of a warehouse run (Python's default: 5 ms). The sender thread
gives the GIL up for each socket call of a request (its timeout set, the headers, the body,
the answer) and waits to take it back while the reader and the packer (Python string work
for the CSV bodies) hold it: up to a switch interval each time, ~20 ms per call, and the
next batch waits for that call. Measured at 200k records (3 runs each, quiet machine):
2.44-2.50 s wall at 5 ms, 2.27-2.39 s at 1 ms (0.5 ms and 0.2 ms no better)."""


def _check_name(name: str, setting: str) -> None:
    if not NAME.match(name):
        raise ConfigError(f"{setting}: {name!r} is not a DataInsider database or table name "
                          "(letters, digits and _ only)")


def main() -> None:
    """Console entry point."""
    TargetDataInsider.cli()
