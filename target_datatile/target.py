"""target-datatile: each Singer stream becomes one SPSS file per run, uploaded to DataTile's
Data Collector API; STATE follows once DataTile's processing job has finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from singer_sdk import typing as th

from target_core.errors import ConfigError
from target_core.filesink import FileLoad
from target_core.filetarget import FileTarget
from target_core.http import ApiSession, check_url
from target_core.settings import (
    api_session,
    check_connection_settings,
    connection_settings,
    load_method_setting,
)
from target_datatile.client import PLATFORM, ApiShape, DataTileClient
from target_datatile.sink import (
    FILE_FORMATS,
    DatabaseMap,
    DataTileLoad,
    LoadOptions,
)

DEFAULT_FILE_FORMAT = "zsav"
"""The issue's choice: about 4 times smaller uploads than a .sav, written in flat memory too
(`target_datatile.zsav`; docs/datatile.md, "Measurements")."""
DEFAULT_CREATED_DATABASES_FILE = "datatile-databases.json"
_SHAPE = ApiShape()


def _assumed(name: str, kind: th.JSONTypeHelper, default: Any, description: str) -> th.Property:
    """A setting for a detail the vendor's page leaves open (docs/datatile.md)."""
    return th.Property(name, kind, default=default,
                       description=f"[assumed] {description} Default: {default}.")


class TargetDataTile(FileTarget):
    """Singer target for DataTile databases (Data Collector API: SPSS file uploads)."""

    name = "target-datatile"
    package_name = "singer-analytics-targets"

    config_jsonschema = th.PropertiesList(
        th.Property("api_url", th.StringType, required=True,
                    description="Data Collector API base URL, https://<server>/api/v2. https "
                                "only, except loopback addresses (the sandbox: "
                                "http://127.0.0.1:8765/datatile/api/v2)."),
        th.Property("token", th.StringType, required=True, secret=True,
                    description="DataTile API token (Profile > Token), sent as the `token` "
                                "header; never logged. Generating a new one invalidates it."),
        th.Property("database_map", th.ObjectType(additional_properties=th.StringType),
                    description='Stream name -> database hash, e.g. {"orders": "5f1a..."}.'),
        th.Property("create_missing_databases", th.BooleanType, default=False,
                    description="A stream with no database is uploaded with `create` into "
                                "folder_hash; the new database's hash is logged and "
                                "remembered in created_databases_file for later runs."),
        th.Property("folder_hash", th.StringType,
                    description="Hash of the folder (not the root) create_missing_databases "
                                "creates databases in."),
        th.Property("created_databases_file", th.StringType,
                    default=DEFAULT_CREATED_DATABASES_FILE,
                    description="JSON file (read and updated by the target) that remembers the "
                                "databases create_missing_databases created, per api_url, so "
                                "the next run loads into the same one."),
        load_method_setting("append-only: upload with `append` (rows added, new "
                            "variables merged). overwrite: upload with `reload` (the "
                            "database's data replaced by the stream's file)."),
        th.Property("file_format", th.StringType, default=DEFAULT_FILE_FORMAT,
                    allowed_values=list(FILE_FORMATS),
                    description="zsav (zlib-compressed SPSS: the default), sav (SPSS with "
                                "bytecode compression only, ~4x larger uploads) or csv."),
        th.Property("wait_for_processing", th.BooleanType, default=True,
                    description="Poll the processing job until it ends, and only then write "
                                "STATE. false: the upload's acceptance is the confirmation "
                                "(a job that fails later is not noticed)."),
        th.Property("poll_interval", th.NumberType, default=5,
                    description="Seconds between two polls of a processing job."),
        th.Property("processing_timeout", th.NumberType, default=3600,
                    description="Seconds to wait for a processing job to end, and for a busy "
                                "database (a previous job on it) to free up."),
        th.Property("callback_url", th.StringType,
                    description="Sent with each upload: DataTile posts every status change "
                                "of the job there."),
        th.Property("batch_size_rows", th.IntegerType,
                    description="Rows handed to the spool at a time (default 5,000); the "
                                "file is one per stream whatever this is."),
        th.Property("spool_dir", th.StringType,
                    description="Directory for the spool and the SPSS file while a run "
                                "builds it (default: the system's temporary directory). "
                                "Needs about twice the stream's file size."),
        *connection_settings(rate_limit_default=0, rate_limit_note="uploads and polls; DataTile "
                             "publishes no number, hence 0 by default"),
        _assumed("job_id_field", th.StringType, _SHAPE.job_id_field,
                 "Field of the upload's answer holding the job id (jobId, job_id are tried "
                 "too)."),
        _assumed("job_status_route", th.StringType, _SHAPE.job_status_route,
                 "Route under api_url that reports a job; {job_id} is replaced."),
        _assumed("job_state_field", th.StringType, _SHAPE.job_state_field,
                 "Field of the job holding its state."),
        _assumed("job_success_states", th.ArrayType(th.StringType),
                 list(_SHAPE.job_success_states), "States meaning the data is loaded."),
        _assumed("job_failure_states", th.ArrayType(th.StringType),
                 list(_SHAPE.job_failure_states),
                 "States meaning the job failed (any other: still running)."),
        _assumed("job_message_field", th.StringType, _SHAPE.job_message_field,
                 "Field of the job with the reason it failed."),
        _assumed("database_hash_field", th.StringType, _SHAPE.database_hash_field,
                 "Field of a finished job holding the database's hash (the new one after "
                 "create)."),
        _assumed("callback_field", th.StringType, _SHAPE.callback_field,
                 "Multipart field that carries callback_url."),
        _assumed("busy_status_codes", th.ArrayType(th.IntegerType),
                 list(_SHAPE.busy_status_codes),
                 "'Database busy' answers, waited out up to processing_timeout."),
        _assumed("quota_status_codes", th.ArrayType(th.IntegerType),
                 list(_SHAPE.quota_status_codes), "Quota refusals: a clear error."),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: DataTileClient | None = None
        self._databases: DatabaseMap | None = None
        super().__init__(*args, **kwargs)

    def check_config(self) -> None:
        config = self.config
        check_connection_settings(config)
        if config.get("batch_size_rows") is not None and config["batch_size_rows"] < 1:
            raise ConfigError("batch_size_rows must be at least 1")
        for name in ("poll_interval", "processing_timeout"):
            if config[name] <= 0:
                raise ConfigError(f"{name} must be more than 0 seconds")
        if config["create_missing_databases"] and not config.get("folder_hash"):
            raise ConfigError("create_missing_databases needs folder_hash: the folder new "
                              "databases are created in")
        if config.get("callback_url"):
            check_url(config["callback_url"], "callback_url")
        # A reload replaces: a run resumed from a mid-run STATE would reload only what came
        # after it. STATE waits for the end of an overwrite run.
        self.checkpoint.hold_until_end = config["load_method"] == "overwrite"

    @property
    def client(self) -> DataTileClient:
        if self._client is None:
            config = self.config
            session = api_session(config, platform=PLATFORM, headers={
                "token": config["token"], "User-Agent": f"{self.name}/{self.plugin_version}"})
            shape = ApiShape(
                job_id_field=config["job_id_field"],
                job_status_route=config["job_status_route"],
                job_state_field=config["job_state_field"],
                job_success_states=tuple(config["job_success_states"]),
                job_failure_states=tuple(config["job_failure_states"]),
                job_message_field=config["job_message_field"],
                database_hash_field=config["database_hash_field"],
                callback_field=config["callback_field"],
                busy_status_codes=tuple(config["busy_status_codes"]),
                quota_status_codes=tuple(config["quota_status_codes"]),
            )
            self._client = DataTileClient(session, shape)
        return self._client

    @property
    def databases(self) -> DatabaseMap:
        if self._databases is None:
            self._databases = DatabaseMap(self.config)
        return self._databases

    def spool_root(self) -> Path | None:
        return Path(self.config["spool_dir"]) if self.config.get("spool_dir") else None

    def open_load(self, stream: str) -> FileLoad:
        config = self.config
        options = LoadOptions(
            file_format=config["file_format"],
            wait_for_processing=config["wait_for_processing"],
            poll_interval=float(config["poll_interval"]),
            processing_timeout=float(config["processing_timeout"]),
            callback_url=config.get("callback_url"),
        )
        return DataTileLoad(stream, self.client, self.databases.place(stream), self.databases,
                            options, self.acknowledged)

    def client_session(self) -> ApiSession | None:
        return self._client.session if self._client is not None else None


def main() -> None:
    """Console entry point."""
    TargetDataTile.cli()
