"""target-graphitenote: load any Singer tap's streams into Graphite Note datasets."""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th

from target_core.budget import BatchBudget
from target_core.errors import ConfigError
from target_core.http import ApiSession
from target_core.settings import (
    LOAD_METHODS,
    api_session,
    check_connection_settings,
    connection_settings,
    load_method_setting,
)
from target_core.target import CoreTarget
from target_graphitenote.client import PLATFORM, GraphiteNoteClient
from target_graphitenote.sink import (
    ColumnOverrides,
    DatasetRegistry,
    GraphiteNoteParts,
    GraphiteNoteSink,
)

DEFAULT_API_URL = "https://app.graphite-note.com/api"
DEFAULT_BATCH_SIZE_BYTES = 6 * 1024 * 1024
UNLIMITED_BATCH_SIZE_BYTES = 1024 * 1024
"""The default when rate_limit_per_minute is 0: with no limit on calls, smaller calls keep
the packer and sender busy while the reader works, and hold less memory."""
DEFAULT_CREATED_DATASETS_FILE = "graphitenote-datasets.json"

_OVERRIDE = th.ObjectType(
    th.Property("alias", th.StringType, description="Column label shown in Graphite Note."),
    th.Property("type", th.StringType, allowed_values=["dimension", "measure"]),
    th.Property("subtype", th.StringType, allowed_values=["text", "numeric", "date", "datetime"]),
    th.Property("format", th.StringType, description='e.g. "#,###.##" or "Y-m-d H:i:s".'),
)


class TargetGraphiteNote(CoreTarget):
    """Singer target for Graphite Note datasets (dataset-fill / dataset-complete API)."""

    name = "target-graphitenote"
    package_name = "singer-analytics-targets"
    default_sink_class = GraphiteNoteSink

    config_jsonschema = th.PropertiesList(
        th.Property("api_token", th.StringType, required=True, secret=True,
                    description="Graphite Note tenant token (Account > API). Sent as a "
                                "bearer token; never logged."),
        th.Property("user_code", th.StringType, required=True,
                    description="Graphite Note user code the datasets belong to."),
        th.Property("api_url", th.StringType, default=DEFAULT_API_URL,
                    description="API base URL. https only, except loopback addresses (the "
                                "sandbox: http://127.0.0.1:8765/graphitenote/api)."),
        th.Property("dataset_code", th.StringType,
                    description="Dataset code to load into when the tap sends one stream."),
        th.Property("dataset_map", th.ObjectType(additional_properties=th.StringType),
                    description='Stream name -> dataset code, e.g. {"orders": "eca2ad3940e3"}. '
                                "Takes precedence over dataset_code."),
        th.Property("create_missing_datasets", th.BooleanType, default=False,
                    description="Create a dataset (dataset-create) for a stream that has no "
                                "dataset code, once: its code is remembered in "
                                "created_datasets_file and reused by later runs."),
        th.Property("created_datasets_file", th.StringType,
                    default=DEFAULT_CREATED_DATASETS_FILE,
                    description="JSON file (read and updated by the target) that remembers "
                                "the datasets create_missing_datasets created, per api_url "
                                "and user_code, so the next run loads into the same one."),
        th.Property("dataset_name_prefix", th.StringType, default="",
                    description="Prefix of the names of datasets this target creates."),
        load_method_setting("append-only: every fill appends. overwrite: the first fill "
                            "of each stream in a run truncates the dataset (append: false)."),
        th.Property("stream_load_methods", th.ObjectType(additional_properties=th.StringType),
                    description='load_method per stream, e.g. {"customers": "overwrite"} for '
                                "a FULL_TABLE stream while the others append; streams not "
                                "named use load_method."),
        th.Property("batch_size_bytes", th.IntegerType,
                    description="Request bytes per dataset-fill call as sent (compressed and "
                                "encoded). Default 6 MiB: batches are as full as this allows, "
                                "since the rate limit counts calls (1 MiB when "
                                "rate_limit_per_minute is 0). Lowered for the rest of the run "
                                "by a 413 answer or a slow answer."),
        th.Property("batch_size_rows", th.IntegerType,
                    description="Optional cap on rows per dataset-fill call (no cap by "
                                "default: batch_size_bytes decides)."),
        th.Property("compress", th.BooleanType, default=True,
                    description="Send insert-data gzip-compressed and base64-encoded."),
        th.Property("compression_level", th.IntegerType, default=1,
                    description="gzip level 1 (fastest, the default: ~2.5x faster than 6 for "
                                "~30% more bytes; the rate limit counts calls, not bytes) "
                                "to 9 (smallest)."),
        *connection_settings(rate_limit_default=10,
                             rate_limit_note="Graphite Note allows 10 per tenant"),
        th.Property("column_overrides", th.ObjectType(
                        additional_properties=th.ObjectType(additional_properties=_OVERRIDE)),
                    description='Per stream ("*" for all), per property: alias, type, subtype, '
                                'format. e.g. {"orders": {"id": {"type": "dimension", '
                                '"subtype": "text"}}}'),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._datasets: DatasetRegistry | None = None
        self._client: GraphiteNoteClient | None = None
        super().__init__(*args, **kwargs)

    def check_config(self) -> None:
        check_connection_settings(self.config)
        for name in ("batch_size_rows", "batch_size_bytes"):
            if self.config.get(name) is not None and self.config[name] < 1:
                raise ConfigError(f"{name} must be at least 1")
        for stream, method in (self.config.get("stream_load_methods") or {}).items():
            if method not in LOAD_METHODS:
                raise ConfigError(f"stream_load_methods: '{stream}' has {method!r}; use "
                                  "append-only or overwrite")
        if not 1 <= self.config["compression_level"] <= 9:
            raise ConfigError("compression_level must be between 1 and 9")
        # A replace starts with a truncate: a run resumed from a mid-run STATE would wipe
        # what the interrupted run loaded and never get it again. STATE waits for the end
        # (from the first overwrite stream on, when only some streams overwrite).
        self.checkpoint.hold_until_end = self.config["load_method"] == "overwrite"
        budget = self.config.get("batch_size_bytes") or (
            DEFAULT_BATCH_SIZE_BYTES if self.config["rate_limit_per_minute"]
            else UNLIMITED_BATCH_SIZE_BYTES)
        self.budget = BatchBudget(
            budget,
            # until the first batch is measured: the worst case (base64 of what gzip cannot
            # shrink; JSON quoting of plain rows), so the first batch cannot overshoot
            first_ratio=1.4,
            slow_seconds=self.config["request_timeout"] / 4,
        )
        self.overrides = ColumnOverrides(self.config, self.logger)

    @property
    def client(self) -> GraphiteNoteClient:
        if self._client is None:
            session = api_session(self.config, platform=PLATFORM, headers={
                "Authorization": f"Bearer {self.config['api_token']}",
                "User-Agent": f"{self.name}/{self.plugin_version}",
            })
            self._client = GraphiteNoteClient(session, self.config["user_code"])
        return self._client

    def client_session(self) -> ApiSession | None:
        return self._client.session if self._client is not None else None

    @property
    def datasets(self) -> DatasetRegistry:
        """The run's stream -> dataset registry, shared with the sinks."""
        if self._datasets is None:
            self._datasets = DatasetRegistry(self.config, self.client, self.checkpoint,
                                             self.logger)
        return self._datasets

    def sink_parts(self, stream: str) -> GraphiteNoteParts:
        assert self.budget is not None  # set by check_config
        return GraphiteNoteParts(
            self.checkpoint, self.uploader, client=self.client, datasets=self.datasets,
            overrides=self.overrides, budget=self.budget, acknowledged=self.acknowledged,
            compress=self.config["compress"],
            compression_level=self.config["compression_level"],
        )

    def finish_streams(self) -> None:
        """dataset-complete for every dataset of the run, with new rows or not: if an earlier
        run died between its last STATE and its complete, this run finishes the dataset."""
        self.overrides.warn_unused()
        for load in self.datasets.loads.values():
            if load.dataset_code is None:
                continue  # no records, so it was never created
            if load.fills == 0:
                self.logger.info("Stream '%s': no new records for dataset '%s'", load.stream,
                                 load.dataset_code)
            total = self.client.complete(load.dataset_code)
            self.logger.info("Stream '%s': %d rows in %d fills to dataset '%s'; dataset-complete "
                             "done%s", load.stream, load.rows, load.fills, load.dataset_code,
                             f" ({total} rows in the dataset)" if total is not None else "")


def main() -> None:
    """Console entry point."""
    TargetGraphiteNote.cli()
