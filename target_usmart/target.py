"""target-usmart: each Singer stream becomes a CSV file (or a new revision of one) in a
uSmart dataset, and the dataset's output pipelines are refreshed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from singer_sdk import typing as th

from target_core.errors import ConfigError
from target_core.filesink import FileLoad
from target_core.filetarget import FileTarget
from target_core.http import ApiSession
from target_core.settings import (
    api_session,
    check_connection_settings,
    connection_settings,
    load_method_setting,
)
from target_usmart.client import DEFAULT_API_URL, PLATFORM, ContractShape, UsmartClient
from target_usmart.sink import (
    ALL_PIPELINES,
    OVERWRITE,
    Destination,
    Destinations,
    UsmartLoad,
    csv_file_name,
)

_SHAPE = ContractShape()
_MAP = th.ObjectType(additional_properties=th.StringType)
_REFRESH = th.CustomType({"type": ["string", "array"], "items": {"type": "string"}})
"""A string ("all", "none") or a list of GUIDs (`anyOf` here would meet the SDK's way of
making optional settings nullable: it appends "null" to it, which is no schema)."""


class TargetUsmart(FileTarget):
    """Singer target for uSmart datasets (s3:generatePutRequest, file:create /
    file:updateRevision, resourceContainer:process)."""

    name = "target-usmart"
    package_name = "singer-analytics-targets"

    config_jsonschema = th.PropertiesList(
        th.Property("org_guid", th.StringType, required=True,
                    description="Organisation GUID: the part between '/org/' and '/dcat/' of "
                                "the organisation's DCAT @id (docs/usmart.md)."),
        th.Property("api_key_id", th.StringType, required=True, secret=True,
                    description="Id of a uSmart API key (header api-key-id); never logged."),
        th.Property("api_key_secret", th.StringType, required=True, secret=True,
                    description="Secret of that API key (header api-key-secret); never "
                                "logged. The key's user needs the Provider role."),
        th.Property("api_url", th.StringType, default=DEFAULT_API_URL,
                    description="Actions' base URL. https only, except loopback addresses "
                                "(the sandbox: http://127.0.0.1:8765/usmart)."),
        th.Property("dataset_guid", th.StringType,
                    description="Dataset GUID of the streams not named in dataset_map (each "
                                "stream is its own file in it)."),
        th.Property("dataset_map", _MAP,
                    description='Stream name -> dataset GUID, e.g. {"orders": "6f1c..."}. '
                                "Takes precedence over dataset_guid."),
        th.Property("file_name_map", _MAP,
                    description='Stream name -> file name in the dataset, e.g. {"orders": '
                                '"orders.csv"}. Default <stream>.csv. Basename only: '
                                "folders and '..' are dropped, '.csv' is added if missing."),
        th.Property("file_guid_map", _MAP,
                    description="Stream name -> GUID of the dataset file it overwrites "
                                "(overwrite only). Default: the dataset's file with the "
                                "stream's file name (found with dataset:view)."),
        load_method_setting("append-only: a new file per run, named with the run's UTC "
                            "time (orders-20240102T030405Z.csv). overwrite: a new "
                            "revision of the stream's file (file:updateRevision), or "
                            "file:create when the dataset has none."),
        th.Property("refresh_pipelines", _REFRESH, default=ALL_PIPELINES,
                    description='Output pipelines to refresh after the upload: "all" of the '
                                'dataset\'s (default), "none" (or []), or a list of resource '
                                "container GUIDs."),
        th.Property("batch_size_rows", th.IntegerType,
                    description="Rows handed to the CSV writer at a time (default 5,000); "
                                "max_file_bytes is checked after each such batch."),
        th.Property("max_file_bytes", th.IntegerType,
                    description="append-only: cut a stream into files of about this many "
                                "bytes, each registered and refreshed once complete, so STATE "
                                "moves during long runs (default: one file per stream per "
                                "run, STATE at its end)."),
        th.Property("spool_dir", th.StringType,
                    description="Directory for the spooled CSV files (default: the "
                                "system's temporary directory). Needs room for the largest "
                                "stream's file."),
        *connection_settings(rate_limit_default=0,
                             rate_limit_note="uSmart publishes no limit, hence 0 by default"),
        th.Property("signed_url_attempts", th.IntegerType, default=3,
                    description="Signed upload URLs asked for per file when the storage "
                                "refuses one (403: expired or not accepted)."),
        # -- what uSmart's page leaves open (docs/usmart.md, "What is assumed") --
        th.Property("dataset_view_files_path", th.StringType, default=_SHAPE.view_files,
                    description="Assumed: where the dataset:view answer lists the dataset's "
                                "files (dotted path)."),
        th.Property("dataset_view_pipelines_path", th.StringType,
                    default=_SHAPE.view_pipelines,
                    description="Assumed: where the dataset:view answer lists the output "
                                "pipelines (dotted path)."),
        th.Property("file_guid_field", th.StringType, default=_SHAPE.file_guid,
                    description="Assumed: the field of a listed file holding its GUID."),
        th.Property("file_name_field", th.StringType, default=_SHAPE.file_name,
                    description="Assumed: the field of a listed file holding its name "
                                "(how a stream's file is recognised)."),
        th.Property("pipeline_guid_field", th.StringType, default=_SHAPE.pipeline_guid,
                    description="Assumed: the field of a listed pipeline holding its GUID."),
        th.Property("file_create_fields", _MAP, default=dict(_SHAPE.create_fields),
                    description="Assumed: the body field names of file:create for dataset, "
                                "reference, file_name and file_size."),
        th.Property("file_create_guid_path", th.StringType, default=_SHAPE.created_file_guid,
                    description="Assumed: where file:create answers the new file's GUID."),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: UsmartClient | None = None
        self.destinations = Destinations()
        self.run_stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        """The run's UTC time, in the names of append-only files."""
        super().__init__(*args, **kwargs)

    # -- config ------------------------------------------------------------------------------

    def check_config(self) -> None:
        config = self.config
        check_connection_settings(config)
        for name in ("batch_size_rows", "signed_url_attempts", "max_file_bytes"):
            if config.get(name) is not None and config[name] < 1:
                raise ConfigError(f"{name} must be at least 1")
        missing = {"dataset", "reference", "file_name", "file_size"} - set(
            config["file_create_fields"])
        if missing:
            raise ConfigError("file_create_fields needs a field name for "
                              f"{', '.join(sorted(missing))}")
        # A revision replaces the whole file: a run resumed from a mid-run STATE would
        # replace it with only the rows after that STATE. STATE waits for the end.
        self.checkpoint.hold_until_end = config["load_method"] == OVERWRITE
        if isinstance(config["refresh_pipelines"], str) and config["refresh_pipelines"] not in (
                ALL_PIPELINES, "none"):
            raise ConfigError('refresh_pipelines must be "all", "none" or a list of output '
                              f"pipeline GUIDs, got {config['refresh_pipelines']!r}")
        if config.get("max_file_bytes") is not None and config["load_method"] == OVERWRITE:
            raise ConfigError("max_file_bytes is for append-only: overwrite replaces one file")

    def refresh_list(self) -> tuple[str, ...] | None:
        """`refresh_pipelines` as pipeline GUIDs; None: all of each dataset's."""
        value = self.config["refresh_pipelines"]
        if value == ALL_PIPELINES:
            return None
        return () if value == "none" else tuple(value)

    # -- the platform --------------------------------------------------------------------------

    @property
    def client(self) -> UsmartClient:
        if self._client is None:
            config = self.config
            session = api_session(config, platform=PLATFORM, headers={
                "api-key-id": config["api_key_id"],
                "api-key-secret": config["api_key_secret"],
                "User-Agent": f"{self.name}/{self.plugin_version}",
            })
            shape = ContractShape(
                view_files=config["dataset_view_files_path"],
                view_pipelines=config["dataset_view_pipelines_path"],
                file_guid=config["file_guid_field"], file_name=config["file_name_field"],
                pipeline_guid=config["pipeline_guid_field"],
                create_fields=dict(config["file_create_fields"]),
                created_file_guid=config["file_create_guid_path"])
            self._client = UsmartClient(session, config["org_guid"], shape=shape,
                                        url_attempts=config["signed_url_attempts"])
        return self._client

    def client_session(self) -> ApiSession | None:
        return self._client.session if self._client is not None else None

    def destination(self, stream: str) -> Destination:
        """Where a stream lands, from the settings (no call is made)."""
        config = self.config
        dataset = (config.get("dataset_map") or {}).get(stream) or config.get("dataset_guid")
        if not dataset:
            raise ConfigError(f"no dataset for stream '{stream}': set dataset_guid, or "
                              f'dataset_map {{"{stream}": "<dataset GUID>"}}')
        name = (config.get("file_name_map") or {}).get(stream) or stream
        return Destination(dataset, csv_file_name(name), config["load_method"],
                           (config.get("file_guid_map") or {}).get(stream),
                           self.refresh_list())

    def open_load(self, stream: str) -> FileLoad:
        destination = self.destination(stream)
        self.destinations.claim(stream, destination)
        return UsmartLoad(stream, self.client, destination, self.run_stamp, self.acknowledged,
                          self.config.get("max_file_bytes"))

    def spool_root(self) -> Path | None:
        spool = self.config.get("spool_dir")
        return Path(spool) if spool else None


def main() -> None:
    """Console entry point."""
    TargetUsmart.cli()
