"""target-graphitenote: load any Singer tap's streams into Graphite Note datasets."""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th

from target_core.budget import BatchBudget
from target_core.destinations import DestinationRegistry
from target_core.errors import ConfigError
from target_core.http import ApiSession, RateLimiter, check_url
from target_core.target import CoreTarget
from target_graphitenote.client import PLATFORM, GraphiteNoteClient
from target_graphitenote.sink import DatasetLoad, GraphiteNoteSink

DEFAULT_API_URL = "https://app.graphite-note.com/api"
LOAD_METHODS = ("append-only", "overwrite")
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
        th.Property("load_method", th.StringType, default="append-only",
                    allowed_values=list(LOAD_METHODS),
                    description="append-only: every fill appends. overwrite: the first fill "
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
        self._loads: dict[str, DatasetLoad] = {}
        self._client: GraphiteNoteClient | None = None
        super().__init__(*args, **kwargs)

    def check_config(self) -> None:
        check_url(self.config["api_url"], "api_url")
        for name in ("batch_size_rows", "request_timeout", "batch_size_bytes"):
            if self.config.get(name) is not None and self.config[name] < 1:
                raise ConfigError(f"{name} must be at least 1")
        for stream, method in (self.config.get("stream_load_methods") or {}).items():
            if method not in LOAD_METHODS:
                raise ConfigError(f"stream_load_methods: '{stream}' has {method!r}; use "
                                  "append-only or overwrite")
        if not 1 <= self.config["compression_level"] <= 9:
            raise ConfigError("compression_level must be between 1 and 9")
        if self.config["rate_limit_per_minute"] < 0 or self.config["max_retries"] < 0:
            raise ConfigError("rate_limit_per_minute and max_retries cannot be negative")
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
        self._overrides_used: set[tuple[str, str]] = set()
        self._streams_seen: set[str] = set()

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

    def api_stats(self) -> tuple[int, float]:
        if self._client is None:
            return 0, 0.0
        session = self._client.session
        return session.calls, session.rate_limiter.waited_total

    def overrides_for(self, stream: str) -> dict[str, dict[str, Any]]:
        overrides = self.config.get("column_overrides") or {}
        return {**overrides.get("*", {}), **overrides.get(stream, {})}

    def check_overrides(self, stream: str, properties: list[str]) -> None:
        """Warn about column_overrides naming properties this stream's SCHEMA lacks."""
        self._streams_seen.add(stream)
        named = (self.config.get("column_overrides") or {}).get(stream, {})
        missing = [name for name in named if name not in properties]
        if missing:
            self.logger.warning("column_overrides for stream '%s' name properties its SCHEMA "
                                "does not have: %s (ignored)", stream, ", ".join(missing))
        for scope in (stream, "*"):
            for name in (self.config.get("column_overrides") or {}).get(scope, {}):
                if name in properties:
                    self._overrides_used.add((scope, name))

    def _warn_unused_overrides(self) -> None:
        overrides = self.config.get("column_overrides") or {}
        unseen = [s for s in overrides if s != "*" and s not in self._streams_seen]
        if unseen:
            self.logger.warning("column_overrides name streams that never arrived: %s",
                                ", ".join(unseen))
        unused = [n for n in overrides.get("*", {}) if ("*", n) not in self._overrides_used]
        if unused and self._streams_seen:
            self.logger.warning('column_overrides "*" name properties no stream had: %s',
                                ", ".join(unused))

    def load_method_for(self, stream: str) -> str:
        return (self.config.get("stream_load_methods") or {}).get(
            stream, self.config["load_method"])

    def load_for(self, stream: str) -> DatasetLoad:
        """The stream's dataset for this run: mapped, given, or created now."""
        if stream in self._loads:
            return self._loads[stream]
        code = (self.config.get("dataset_map") or {}).get(stream)
        if code is None and self.config.get("dataset_code"):
            code = self.config["dataset_code"]
            if other := self._stream_loading_into(code):
                raise ConfigError(
                    f"dataset_code is for one stream, but streams '{other}' and '{stream}' "
                    "both arrived: map each stream with dataset_map"
                )
        replace = self.load_method_for(stream) == "overwrite"
        if replace:
            self.checkpoint.hold_until_end = True  # see check_config
        if code is None and self.config["create_missing_datasets"]:
            code = self.created_datasets.get(self.dataset_name(stream))
            if code is not None:
                self.logger.info("Stream '%s': dataset '%s' was created by an earlier run "
                                 "(remembered in %s)", stream, code,
                                 self.created_datasets.path)
        if code is not None and replace and (other := self._stream_loading_into(code)):
            raise ConfigError(
                f"streams '{other}' and '{stream}' are both mapped to "
                f"dataset '{code}': with load_method overwrite each would replace the other's "
                "rows; map them to different datasets"
            )
        if code is None and not self.config["create_missing_datasets"]:
            raise ConfigError(
                f"no dataset for stream '{stream}': set dataset_code (one stream), "
                f'dataset_map ({{"{stream}": "<dataset code>"}}) or create_missing_datasets'
            )
        load = self._loads[stream] = DatasetLoad(stream, code, replace)
        self.logger.info("Stream '%s' -> %s dataset %s (%s)", stream, PLATFORM,
                         f"'{code}'" if code else "to be created with its first batch",
                         "overwrite" if replace else "append-only")
        return load

    def _stream_loading_into(self, code: str) -> str | None:
        return next((s for s, load in self._loads.items() if load.dataset_code == code), None)

    @property
    def created_datasets(self) -> DestinationRegistry:
        return DestinationRegistry(self.config["created_datasets_file"],
                                   f"{self.config['api_url']} user {self.config['user_code']}")

    def dataset_name(self, stream: str) -> str:
        return f"{self.config['dataset_name_prefix']}{stream}"

    def create_dataset(self, load: DatasetLoad, columns: list[dict[str, Any]]) -> None:
        """Create the stream's dataset (sender thread, first batch: no empty datasets)."""
        name = self.dataset_name(load.stream)
        load.dataset_code = self.client.create_dataset(name, columns)
        self.created_datasets.remember(name, load.dataset_code)
        self.logger.info("Created %s dataset '%s' with code '%s' for stream '%s'; remembered "
                         "in %s, so later runs load into it", PLATFORM, name,
                         load.dataset_code, load.stream, self.created_datasets.path)

    def finish_streams(self) -> None:
        """dataset-complete for every dataset of the run, with new rows or not: if an earlier
        run died between its last STATE and its complete, this run finishes the dataset."""
        self._warn_unused_overrides()
        for load in self._loads.values():
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
