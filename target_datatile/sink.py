"""How a stream becomes one DataTile upload: the file path of the core, with DataTile's rules.

The core (`target_core.filesink`) spools the stream's rows, measures them, and at the end of
the input hands over one finished file per stream. This module says:

- which file: `file_format` `zsav` / `sav` (`spss.SpssWriter` / `spss.SavWriter`, values
  converted by `variables`) or `csv` (the core's `CsvWriter`);
- what the variables are called: DataTile's name rule (`variables.variable_name`), made
  unique within 64 bytes by the core (`max_name_bytes`);
- where it goes (`DatabaseMap`): `append` (append-only) or `reload` (overwrite) into the
  stream's database from `database_map` or from an earlier run's `create`, else `create`
  into `folder_hash` when `create_missing_databases` is on;
- when it counts: the upload returns a processing job, polled to its end in `commit`; with
  `wait_for_processing: false` the upload's acceptance is the confirmation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_core.columns import identifier
from target_core.destinations import DestinationRegistry
from target_core.errors import ConfigError
from target_core.filesink import FileLoad, FinishedFile
from target_core.formats import CsvWriter, FormatWriter
from target_core.sink import Acknowledged
from target_datatile.client import PLATFORM, DataTileClient
from target_datatile.spss import SavWriter, SpssWriter
from target_datatile.variables import MAX_NAME_BYTES, variable_name

logger = logging.getLogger(__name__)

FILE_FORMATS: dict[str, type[FormatWriter]] = {"sav": SavWriter, "zsav": SpssWriter,
                                               "csv": CsvWriter}
LOAD_ACTIONS = {"append-only": "append", "overwrite": "reload"}


@dataclass(frozen=True)
class Destination:
    """Where one stream's file goes in this run."""

    stream: str
    action: str
    """``create`` (into a folder), ``reload`` or ``append`` (a database)."""
    hash: str
    """The folder's hash for ``create``, the database's otherwise."""

    @property
    def described(self) -> str:
        if self.action == "create":
            return f"a new database in folder '{self.hash}'"
        return f"database '{self.hash}'"


class DatabaseMap:
    """Stream -> destination for the run, from the settings and the databases earlier runs
    created (remembered in `created_databases_file`, per api_url)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.mapped: Mapping[str, str] = config.get("database_map") or {}
        self.action = LOAD_ACTIONS[config["load_method"]]
        self.create_missing = bool(config["create_missing_databases"])
        self.folder_hash: str | None = config.get("folder_hash")
        self.created = DestinationRegistry(config["created_databases_file"], config["api_url"])
        self.destinations: dict[str, Destination] = {}

    def place(self, stream: str) -> Destination:
        """The stream's destination (at its first SCHEMA); `ConfigError` if it has none."""
        if stream in self.destinations:
            return self.destinations[stream]
        database = self.mapped.get(stream)
        if database is None and self.create_missing:
            database = self.created.get(stream)
            if database is not None:
                logger.info("Stream '%s': database '%s' was created by an earlier run "
                            "(remembered in %s)", stream, database, self.created.path)
        if database is None:
            if not self.create_missing:
                raise ConfigError(
                    f"no database for stream '{stream}': add it to database_map "
                    f'({{"{stream}": "<database hash>"}}), or set create_missing_databases '
                    "and folder_hash")
            destination = Destination(stream, "create", self.folder_hash or "")
        else:
            other = next((d.stream for d in self.destinations.values()
                          if d.hash == database and d.action != "create"), None)
            if other is not None and self.action == "reload":
                raise ConfigError(
                    f"streams '{other}' and '{stream}' are both mapped to database "
                    f"'{database}': with load_method overwrite each reload would replace the "
                    "other's rows; map them to different databases")
            destination = Destination(stream, self.action, database)
        self.destinations[stream] = destination
        logger.info("Stream '%s' -> %s %s (%s)", stream, PLATFORM, destination.described,
                    destination.action)
        return destination

    def remember_created(self, stream: str, database: str) -> None:
        self.created.remember(stream, database)


@dataclass(frozen=True)
class LoadOptions:
    """The settings every stream's load shares."""

    file_format: str = "zsav"
    wait_for_processing: bool = True
    poll_interval: float = 5.0
    processing_timeout: float = 3600.0
    callback_url: str | None = None


class DataTileLoad(FileLoad):
    """One stream's file for one run: upload it, then wait for its processing job."""

    max_name_bytes = MAX_NAME_BYTES

    def __init__(self, stream: str, client: DataTileClient, destination: Destination,
                 databases: DatabaseMap, options: LoadOptions,
                 acknowledged: Acknowledged | None = None) -> None:
        super().__init__(stream)
        self.client = client
        self.destination = destination
        self.databases = databases
        self.options = options
        self.acknowledged = acknowledged
        self.writer_class = FILE_FORMATS[options.file_format]
        self.confirms_each_file = not options.wait_for_processing
        self.job_id: str | None = None
        self._started = 0.0

    def sanitise_name(self, name: str) -> str:
        return variable_name(name)

    def upload(self, file: FinishedFile) -> None:
        self._started = time.monotonic()
        destination = self.destination
        name = f"{identifier(self.stream) or 'stream'}{file.suffix}"  # create names it so
        self.job_id = self.client.upload(
            destination.action, destination.hash, Path(file.path), file_name=name,
            callback_url=self.options.callback_url,
            busy_timeout=self.options.processing_timeout)
        logger.info("Stream '%s': %s accepted %s (%d rows, %d bytes) for %s %s: job %s",
                    self.stream, PLATFORM, name, file.rows, file.size, destination.action,
                    destination.described, self.job_id)
        if self.confirms_each_file:
            logger.warning("Stream '%s': wait_for_processing is false, so the accepted upload "
                           "counts as loaded; if job %s fails, only DataTile's Processing "
                           "log tells", self.stream, self.job_id)
            if destination.action == "create":
                logger.warning("Stream '%s': the new database's hash is not known without "
                               "waiting for the job: put it in database_map, or the next run "
                               "creates another database", self.stream)
            self._acknowledge(file.rows)

    def commit(self, files: Sequence[FinishedFile]) -> None:
        if self.confirms_each_file or self.job_id is None:
            return
        job = self.client.wait_for_job(self.job_id, poll_interval=self.options.poll_interval,
                                       timeout=self.options.processing_timeout)
        if self.destination.action == "create":
            if job.database_hash:
                self.databases.remember_created(self.stream, job.database_hash)
                logger.info("Stream '%s': created %s database '%s' (remembered in %s, so "
                            "later runs load into it; or put it in database_map)",
                            self.stream, PLATFORM, job.database_hash,
                            self.databases.created.path)
            else:
                logger.warning("Stream '%s': job %s created a database but its answer has no "
                               "'%s' field, so its hash is unknown: put it in database_map, "
                               "or the next run creates another database", self.stream,
                               job.id, self.client.shape.database_hash_field)
        self._acknowledge(sum(f.rows for f in files))

    def _acknowledge(self, rows: int) -> None:
        if self.acknowledged is not None:
            self.acknowledged(self.stream, 1, rows, time.monotonic() - self._started)
