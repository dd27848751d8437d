"""target-graphitenote: load any Singer tap's streams into Graphite Note datasets."""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th

from target_core.errors import ConfigError
from target_core.http import ApiSession, RateLimiter, check_url
from target_core.target import CoreTarget
from target_graphitenote.client import PLATFORM, GraphiteNoteClient
from target_graphitenote.sink import DatasetRegistry, GraphiteNoteParts, GraphiteNoteSink

DEFAULT_API_URL = "https://app.graphite-note.com/api"
LOAD_METHODS = ("append-only", "overwrite")

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
                                "dataset code; its code is logged so it can be mapped next time."),
        th.Property("dataset_name_prefix", th.StringType, default="",
                    description="Prefix of the names of datasets this target creates."),
        th.Property("load_method", th.StringType, default="append-only",
                    allowed_values=list(LOAD_METHODS),
                    description="append-only: every fill appends. overwrite: the first fill "
                                "of each stream in a run truncates the dataset (append: false)."),
        th.Property("batch_size_rows", th.IntegerType, default=10_000,
                    description="Rows per dataset-fill call (Graphite Note suggests 10,000)."),
        th.Property("compress", th.BooleanType, default=True,
                    description="Send insert-data gzip-compressed and base64-encoded."),
        th.Property("compression_level", th.IntegerType, default=1,
                    description="gzip level 1 (fastest, the default: ~2.5x faster than 6 for "
                                "~30% more bytes; the rate limit counts calls, not bytes) "
                                "to 9 (smallest)."),
        th.Property("rate_limit_per_minute", th.IntegerType, default=10,
                    description="Most API calls in any 60 s (Graphite Note allows 10 per "
                                "tenant). 0 turns the client-side limit off."),
        th.Property("request_timeout", th.IntegerType, default=300,
                    description="Seconds to wait for one API answer."),
        th.Property("max_retries", th.IntegerType, default=8,
                    description="Retries of a call after 429, 5xx, a dropped connection or a "
                                "timeout (exponential backoff; Retry-After is honoured)."),
        th.Property("column_overrides", th.ObjectType(
                        additional_properties=th.ObjectType(additional_properties=_OVERRIDE)),
                    description='Per stream ("*" for all), per property: alias, type, subtype, '
                                'format. e.g. {"orders": {"id": {"type": "dimension", '
                                '"subtype": "text"}}}'),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: GraphiteNoteClient | None = None
        self._datasets: DatasetRegistry | None = None
        super().__init__(*args, **kwargs)

    def check_config(self) -> None:
        check_url(self.config["api_url"], "api_url")
        for name in ("batch_size_rows", "request_timeout"):
            if self.config[name] < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 1 <= self.config["compression_level"] <= 9:
            raise ConfigError("compression_level must be between 1 and 9")
        if self.config["rate_limit_per_minute"] < 0 or self.config["max_retries"] < 0:
            raise ConfigError("rate_limit_per_minute and max_retries cannot be negative")
        # A replace starts with a truncate: a run resumed from a mid-run STATE would wipe
        # what the interrupted run loaded and never get it again. STATE waits for the end.
        self.checkpoint.hold_until_end = self.config["load_method"] == "overwrite"

    @property
    def client(self) -> GraphiteNoteClient:
        if self._client is None:
            session = ApiSession(
                self.config["api_url"],
                platform=PLATFORM,
                headers={"Authorization": f"Bearer {self.config['api_token']}",
                         "User-Agent": f"{self.name}/{self.plugin_version}"},
                timeout=self.config["request_timeout"],
                max_retries=self.config["max_retries"],
                rate_limiter=RateLimiter(self.config["rate_limit_per_minute"]),
            )
            self._client = GraphiteNoteClient(session, self.config["user_code"])
        return self._client

    @property
    def datasets(self) -> DatasetRegistry:
        """The run's stream -> dataset registry, shared with the sinks."""
        if self._datasets is None:
            self._datasets = DatasetRegistry(self.config, self.client, self.logger)
        return self._datasets

    def overrides_for(self, stream: str) -> dict[str, dict[str, Any]]:
        overrides = self.config.get("column_overrides") or {}
        return {**overrides.get("*", {}), **overrides.get(stream, {})}

    def sink_parts(self, stream: str) -> GraphiteNoteParts:
        return GraphiteNoteParts(
            self.checkpoint, self.uploader, client=self.client, datasets=self.datasets,
            overrides=self.overrides_for(stream), compress=self.config["compress"],
            compression_level=self.config["compression_level"],
        )

    def finish_streams(self) -> None:
        """dataset-complete for every dataset of the run, with new rows or not: if an earlier
        run died between its last STATE and its complete, this run finishes the dataset."""
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
