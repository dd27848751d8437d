"""An emulator of DataTile's Data Collector API (``/work/shared/apis/datatile.md``).

Served by ``target-sandbox serve`` under ``/datatile/api/v2``, so a target configured with
``api_url = http://127.0.0.1:PORT/datatile/api/v2`` runs its real HTTP path with no account.

- ``POST /upload/{action}/{hash}``: multipart field ``dataset`` (and an optional ``callback``
  field) queues a processing job; the answer is ``202 {"id", "status"}``.
- ``GET /jobs/{id}``: the job, with ``status`` queued / processing / completed / failed,
  ``database`` (the database's hash) and ``message``.

What it checks, as the vendor's page says the real API does: the ``token`` header; the
action (``create`` into a folder that is not the root, ``reload`` / ``append`` into a
database); one request at a time per destination (a second one while a job runs: 409); a
file-size limit (413) and an upload quota (402). The job reads the file for real with
pyreadstat, a reader independent of the target's writer: ``create`` makes a database,
``reload`` replaces its variables and rows, ``append`` adds rows and merges new variables
("new waves are merged"), and a variable whose type differs from the database's fails the
job, leaving the database as it was. A job starts with the upload's answer and takes
``processing_seconds`` or its reading, whichever is longer; the database changes, and the
job ends, only then. The job itself reads the file's metadata (variables, types) and the
last row the header announces (the row count; a file cut short or unreadable fails it) and
keeps the file; its rows are read in chunks into the database's row file when first asked
for (the state, ``show``), then counted again, so a run's wall time is the target's, not
the emulator decoding every value (see `Catalog`).

Assumed, since the vendor's OpenAPI file was not available (the target has a setting for
each): the job id field ``id``, the status route ``/jobs/{id}`` and its states, the
``database`` field carrying the new database's hash, the ``callback`` field name, and the
status codes 409 (busy), 402 (quota), 413 (file too large). Errors are
``{"error": {"status", "message"}}``.

Sandbox values: token ``dt-sandbox-token``; folder ``sandbox-folder``; empty database
``sandbox-database``; the root folder ``root``. Settings come from the environment when the
server starts (``DATATILE_SANDBOX_PROCESSING_SECONDS``, ``..._MAX_FILE_BYTES``,
``..._UPLOAD_QUOTA``) or, in tests, from ``emulator.settings``. The file-size limit is 2 GiB
by default; the server's own body limit (64 MiB unless ``target-sandbox serve
--max-body-bytes N``) applies first, so big uploads need both.

Built from the sandbox kit: ``Routes`` with path parameters, the kit's multipart parser
(file parts streamed to disk, never held whole), ``Store.keep_file`` for the upload,
``Jobs`` to run the processing on its own thread, and the rate-limit bucket keyed on the
``token`` header (``credential_sources``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hmac
import ipaddress
import math
import os
import re
import secrets
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson
import pyreadstat

from target_core.sandbox import (
    ApiError,
    BusyKeys,
    Jobs,
    Multipart,
    Reply,
    Request,
    Routes,
    Store,
    default_error_body,
    served_elsewhere,
)

SANDBOX_TOKEN = "dt-sandbox-token"
SANDBOX_FOLDER = "sandbox-folder"
SANDBOX_DATABASE = "sandbox-database"
ROOT_FOLDER = "root"
ACTIONS = ("create", "reload", "append")
BUSY_STATUS = 409
QUOTA_STATUS = 402
TOO_LARGE_STATUS = 413
JOB_STATES = ("queued", "processing", "completed", "failed")
READ_CHUNK_ROWS = 100_000
_META_VERSION = 1
_SPSS_EPOCH = dt.datetime(1582, 10, 14)
_DATE_FORMATS = re.compile(r"(DATE|ADATE|EDATE|JDATE|SDATE)\d")
_DATETIME_FORMATS = re.compile(r"(DATETIME|YMDHMS)\d")
_WHOLE_NUMBER_FORMAT = re.compile(r"F\d+\.0\Z")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


@dataclass
class EmulatorSettings:
    processing_seconds: float = 0.05
    """The shortest time a job takes, from the upload's answer to its end. It reads the
    file within that time, as a platform's processing does; a file that takes longer to
    read makes a longer job."""
    max_file_bytes: int = 2 * 1024 * 1024 * 1024
    upload_quota: int = 10_000
    """Uploads accepted since the last reset; the next one is refused for quota."""

    @classmethod
    def from_environment(cls) -> EmulatorSettings:
        return cls(
            _env_number("DATATILE_SANDBOX_PROCESSING_SECONDS", cls.processing_seconds),
            int(_env_number("DATATILE_SANDBOX_MAX_FILE_BYTES", cls.max_file_bytes)),
            int(_env_number("DATATILE_SANDBOX_UPLOAD_QUOTA", cls.upload_quota)),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# reading a dataset file ---------------------------------------------------------------------
@dataclass
class FileContent:
    variables: list[dict[str, Any]]
    read_chunks: Callable[[], Iterator[list[list[Any]]]]
    """Rows in variable order, a chunk of at most `READ_CHUNK_ROWS` at a time (each call
    reads the file again)."""
    count_rows: Callable[[], int]
    """The rows, counted by reading the file to its end without decoding every value (a
    file cut short or corrupt raises here, as reading its rows would)."""


def _variable_kind(readstat_type: str, fmt: str) -> str:
    if readstat_type == "string":
        return "string"
    if _DATETIME_FORMATS.match(fmt):
        return "datetime"
    if _DATE_FORMATS.match(fmt):
        return "date"
    return "numeric"


def _value_reader(variable: dict[str, Any]) -> Callable[[Any], Any]:
    kind, whole = variable["type"], _WHOLE_NUMBER_FORMAT.match(variable["format"] or "")

    def read(value: Any) -> Any:
        if kind == "string":
            return value
        if value is None or math.isnan(value):
            return None
        if kind == "date":
            return (_SPSS_EPOCH + dt.timedelta(days=math.floor(value / 86400))).date().isoformat()
        if kind == "datetime":  # seconds in a double, kept to the microsecond
            moment = _SPSS_EPOCH + dt.timedelta(microseconds=round(value * 1_000_000))
            return moment.isoformat(timespec="microseconds")
        return int(value) if whole and value.is_integer() else value

    return read


def read_spss(path: Path) -> FileContent:
    """Variables and rows of a .sav / .zsav file, read with pyreadstat (dates as numbers, so
    a date-time keeps its microseconds and no reader-side overflow hides a value)."""
    _, meta = pyreadstat.read_sav(str(path), metadataonly=True, output_format="dict")
    variables = []
    for name in meta.column_names:
        fmt = meta.original_variable_types.get(name) or ""
        kind = _variable_kind(meta.readstat_variable_types[name], fmt)
        labels = meta.variable_value_labels.get(name) or {}
        variables.append({
            "name": name,
            "label": meta.column_names_to_labels.get(name),
            "type": kind,
            "format": fmt,
            "measure": meta.variable_measure.get(name),
            "value_labels": {_label_key(value): text for value, text in labels.items()},
        })
    readers = [_value_reader(variable) for variable in variables]

    def chunks() -> Iterator[list[list[Any]]]:
        for data, _ in pyreadstat.read_file_in_chunks(
            pyreadstat.read_sav, str(path), chunksize=READ_CHUNK_ROWS,
            output_format="dict", disable_datetime_conversion=True,
        ):
            columns = [
                [read(value) for value in _plain_list(data[variable["name"]])]
                for read, variable in zip(readers, variables, strict=True)
            ]
            yield [list(row) for row in zip(*columns, strict=True)]

    def count() -> int:
        """The rows the header announces, once the last of them was read (ReadStat still
        walks every row before it, but decodes no value: 0.02 s for a 200,000-row .sav
        where reading one column took 0.07 s); a file cut short fails that read, and is
        then counted by reading one column to the end: a numeric one in a single pass (8
        bytes a row), else the first, a chunk at a time."""
        announced = int(meta.number_rows or 0)
        if not meta.column_names:
            return announced
        if announced > 0:
            with contextlib.suppress(pyreadstat.ReadstatError, pyreadstat.PyreadstatError):
                last, _ = pyreadstat.read_sav(
                    str(path), usecols=meta.column_names[:1], row_offset=announced - 1,
                    row_limit=1, output_format="dict", disable_datetime_conversion=True)
                if len(last[meta.column_names[0]]) == 1:
                    return announced
        numeric = [name for name in meta.column_names
                   if meta.readstat_variable_types[name] != "string"]
        if numeric:
            data, _ = pyreadstat.read_sav(str(path), usecols=numeric[:1], output_format="dict",
                                          disable_datetime_conversion=True)
            return len(data[numeric[0]])
        return sum(len(data[meta.column_names[0]]) for data, _ in pyreadstat.read_file_in_chunks(
            pyreadstat.read_sav, str(path), chunksize=READ_CHUNK_ROWS, output_format="dict",
            disable_datetime_conversion=True, usecols=meta.column_names[:1]))

    return FileContent(variables, chunks, count)


def _plain_list(values: Any) -> list[Any]:
    """pyreadstat's dict output: numpy arrays for numbers, lists for strings."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _label_key(value: Any) -> str:
    """Value-label keys as JSON object keys: ``0`` and ``1``, not ``0.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_csv(path: Path) -> FileContent:
    """A CSV file: a header row, then rows; every variable is a string variable."""
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError("the CSV file has no header row")
    variables = [{"name": name, "label": None, "type": "string", "format": None,
                  "measure": "nominal", "value_labels": {}} for name in header]

    def chunks() -> Iterator[list[list[Any]]]:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader)
            chunk: list[list[Any]] = []
            for row in reader:
                if len(row) != len(header):
                    raise ValueError(f"CSV row {reader.line_num} has {len(row)} fields, "
                                     f"the header {len(header)}")
                chunk.append(row)
                if len(chunk) == READ_CHUNK_ROWS:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    return FileContent(variables, chunks, lambda: sum(len(chunk) for chunk in chunks()))


def read_dataset_file(path: Path) -> FileContent:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic in (b"$FL2", b"$FL3"):  # .sav, .zsav
        return read_spss(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    raise ValueError("the file is neither an SPSS file (.sav/.zsav) nor a .csv file")


def merge_variables(
    known: list[dict[str, Any]], incoming: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append's merge: known variables keep their place, new ones are added at the end; a
    variable whose type changed fails the job (SPSS names are compared case-insensitively)."""
    merged = {variable["name"].upper(): dict(variable) for variable in known}
    for variable in incoming:
        key = variable["name"].upper()
        if key not in merged:
            merged[key] = dict(variable)
            continue
        existing = merged[key]
        if existing["type"] != variable["type"]:
            raise ValueError(
                f"variable '{variable['name']}' is {variable['type']} in the file but "
                f"{existing['type']} in the database"
            )
        existing["value_labels"] = {**existing["value_labels"], **variable["value_labels"]}
    return list(merged.values())


# the catalog --------------------------------------------------------------------------------
def _fresh_database(name: str, folder: str, table: str) -> dict[str, Any]:
    return {"name": name, "folder": folder, "table": table, "variables": [], "row_count": 0,
            "rows_bytes": 0, "pending": [], "loads": 0, "created": _now(), "updated": None}


class Catalog:
    """Folders, databases and jobs in ``meta.json``; each database's rows in its own file,
    as lines of ``{"columns": [...], "rows": [[...], ...]}`` (one line per chunk read).

    A processing job reads what DataTile must know to answer (the variables and a type
    clash from the file's metadata; the row count, and that the rows can be read, from the
    file read to its last row: `FileContent.count_rows`) and keeps the file as the database's
    ``pending`` part; its rows are read, a chunk at a time, into the row file when something
    first asks for rows (`materialize`: the state, ``show``), so the job's time is not the
    emulator decoding every value while the target polls."""

    def __init__(self, store: Store):
        self.store = store
        with store.lock:
            meta = store.read_meta() or self._seed()
            self.folders: dict[str, dict[str, Any]] = meta["folders"]
            self.databases: dict[str, dict[str, Any]] = meta["databases"]
            self.jobs: dict[str, dict[str, Any]] = meta["jobs"]
            self.uploads = meta["uploads"]
            for database in self.databases.values():
                store.trim_rows(database["table"], database["rows_bytes"])
            for job in self.jobs.values():
                if job["status"] in ("queued", "processing"):
                    job.update(status="failed", message="the sandbox stopped during the job",
                               finished=_now())

    @staticmethod
    def _seed() -> dict[str, Any]:
        return {
            "folders": {ROOT_FOLDER: {"name": "Root", "root": True},
                        SANDBOX_FOLDER: {"name": "Sandbox folder", "root": False}},
            "databases": {SANDBOX_DATABASE: _fresh_database(
                "Sandbox database", SANDBOX_FOLDER, SANDBOX_DATABASE)},
            "jobs": {},
            "uploads": 0,
        }

    def save(self) -> None:
        self.store.write_meta({"version": _META_VERSION, "folders": self.folders,
                               "databases": self.databases, "jobs": self.jobs,
                               "uploads": self.uploads})

    def new_key(self, taken: dict[str, Any]) -> str:
        key = secrets.token_hex(8)
        while key in taken:
            key = secrets.token_hex(8)
        return key

    def load(self, job: dict[str, Any], content: FileContent, rows: int, path: Path) -> str:
        """Apply one processed file kept at `path` (in the store's files), of `rows` rows
        (`content.count_rows()`); returns the database hash. On any error the database is
        left as it was."""
        action, target = job["action"], job["target"]
        part = {"file": path.name, "rows": rows}
        with self.store.lock:
            if action == "create":
                database_hash = self.new_key(self.databases)
                database = _fresh_database(Path(job["file"]).stem or database_hash, target,
                                           database_hash)
            else:
                database_hash = target
                database = self.databases[target]
            known = database["variables"] if action == "append" else []
            variables = merge_variables(known, content.variables)
            old_table, replaced = database["table"], list(database.get("pending") or [])
            if action == "append":
                database.update(pending=[*replaced, part],
                                row_count=database["row_count"] + rows)
                replaced = []
            else:
                table = f"{database_hash}.{job['id']}"
                self.store.truncate_rows(table)
                database.update(table=table, rows_bytes=0, pending=[part], row_count=rows)
            database.update(variables=variables, loads=database["loads"] + 1, updated=_now())
            self.databases[database_hash] = database
            job["rows"] = rows
            self.save()
        if old_table != database["table"]:
            self.store.rows_path(old_table).unlink(missing_ok=True)
        for gone in replaced:
            self.store.file_path(gone["file"]).unlink(missing_ok=True)
        return database_hash

    def materialize(self, database: dict[str, Any]) -> None:
        """Read the rows of the database's pending files into its row file, in chunks
        (never a whole file in memory). Its ``row_count`` then counts the rows read: a file
        whose rows cannot all be read, or are not as many as its header said, shows there
        (and in ``read_errors``). Not while another process serves the data dir (``show``
        beside a live server): `rows` then reads the pending files without keeping them."""
        with self.store.lock:
            pending = database.get("pending") or []
            if not pending or served_elsewhere(self.store.root.parent):
                return
            size, rows = database["rows_bytes"], database["row_count"]
            for part in pending:
                path = self.store.file_path(part["file"])
                read = 0
                try:
                    content = read_dataset_file(path)
                    names = orjson.dumps([variable["name"] for variable in content.variables])
                    for chunk in content.read_chunks():
                        line = b'{"columns":' + names + b',"rows":' + orjson.dumps(chunk)
                        size = self.store.append_line(database["table"], line + b"}")
                        read += len(chunk)
                except Exception as exc:
                    self.store.trim_rows(database["table"], database["rows_bytes"])
                    database.setdefault("read_errors", []).append(
                        f"{part['file']}: {_reason(exc)}")
                    read = 0
                    size = database["rows_bytes"]
                rows += read - part["rows"]
                database.update(rows_bytes=size)
            database.update(pending=[], row_count=rows)
            self.save()
            for part in pending:
                self.store.file_path(part["file"]).unlink(missing_ok=True)

    def rows(self, database: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
        defaults = {v["name"]: "" if v["type"] == "string" else None
                    for v in database["variables"]}
        by_upper = {name.upper(): name for name in defaults}

        def as_objects(batch: dict[str, Any]) -> list[dict[str, Any]]:
            names = [by_upper.get(name.upper(), name) for name in batch["columns"]]
            return [{**defaults, **dict(zip(names, row, strict=True))} for row in batch["rows"]]

        rows = self.store.read_rows(database["table"], limit, as_objects)
        for part in database.get("pending") or []:  # not materialized: read, not kept
            if limit is not None and len(rows) >= limit:
                break
            content = read_dataset_file(self.store.file_path(part["file"]))
            names = [variable["name"] for variable in content.variables]
            for chunk in content.read_chunks():
                rows += as_objects({"columns": names, "rows": chunk})
                if limit is not None and len(rows) >= limit:
                    break
        return rows if limit is None else rows[:limit]


# the API ------------------------------------------------------------------------------------
class DataTileEmulator:
    """The Data Collector API for one user (token :data:`SANDBOX_TOKEN`)."""

    name: ClassVar[str] = "datatile"
    prefix: ClassVar[str] = "/datatile/api/v2"
    credential_sources: ClassVar[tuple[str, ...]] = ("header:token",)

    def __init__(self, store: Store):
        self.store = store
        self.catalog = Catalog(store)
        self.settings = EmulatorSettings.from_environment()
        self.busy = BusyKeys()
        self.jobs = Jobs("dt-job")
        self.routes = Routes()
        self.routes.add("POST", "/upload/{action}/{hash}", self._upload)
        self.routes.add("GET", "/jobs/{job_id}", self._job)

    def handle(self, request: Request) -> Reply:
        self._authenticate(request)
        return self.routes.dispatch(request)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return default_error_body(status, message)

    @staticmethod
    def _authenticate(request: Request) -> None:
        token = (request.header("token") or "").strip()
        if not token:
            raise ApiError(401, "missing API token (header 'token')")
        if not hmac.compare_digest(token.encode(), SANDBOX_TOKEN.encode()):
            raise ApiError(401, "invalid API token")

    # routes -------------------------------------------------------------------------------
    def _upload(self, request: Request) -> Reply:
        catalog = self.catalog
        action, target = request.path_params["action"], request.path_params["hash"]
        if action not in ACTIONS:
            raise ApiError(404, f"unknown action '{action}': create, reload or append")
        if action == "create":
            folder = catalog.folders.get(target)
            if folder is None:
                raise ApiError(404, f"folder '{target}' not found")
            if folder["root"]:
                raise ApiError(400, "a database cannot be created in the root folder")
        elif target not in catalog.databases:
            raise ApiError(404, f"database '{target}' not found")
        if catalog.uploads >= self.settings.upload_quota:
            raise ApiError(QUOTA_STATUS, f"upload quota of {self.settings.upload_quota} "
                           "requests reached")
        incoming = self.store.root / "incoming" / secrets.token_hex(8)  # one per request
        try:
            return self._queue(action, target, request.multipart(incoming))
        finally:
            shutil.rmtree(incoming, ignore_errors=True)  # a file not kept (refused upload)

    def _queue(self, action: str, target: str, form: Multipart) -> Reply:
        catalog = self.catalog
        dataset = form.files.get("dataset")
        if dataset is None:
            raise ApiError(400, "the multipart body has no file field 'dataset'")
        if dataset.size > self.settings.max_file_bytes:
            raise ApiError(TOO_LARGE_STATUS, f"the file is {dataset.size} bytes; the "
                           f"limit is {self.settings.max_file_bytes}")
        if not self.busy.claim(target):
            raise ApiError(BUSY_STATUS, f"'{target}' is busy: a previous request to it is "
                           "still in progress")
        try:
            with self.store.lock:
                job_id = catalog.new_key(catalog.jobs)
                file_name = dataset.file_name or "dataset"
                path = self.store.keep_file(f"{job_id}{Path(file_name).suffix}", dataset.path)
                job = {"id": job_id, "status": "queued", "action": action, "target": target,
                       "database": None if action == "create" else target,
                       "file": file_name, "bytes": dataset.size,
                       "callback": (form.fields.get("callback") or "").strip() or None,
                       "message": None, "rows": None, "created": _now(), "finished": None,
                       "callbacks_sent": 0}
                catalog.jobs[job_id] = job
                catalog.uploads += 1
                catalog.save()
        except BaseException:
            self.busy.release(target)
            raise
        ends = time.monotonic() + self.settings.processing_seconds
        self.jobs.start(action, lambda: self._process(job, path, ends))
        return Reply(202, {"id": job_id, "status": "queued"})

    def _job(self, request: Request) -> Reply:
        with self.store.lock:
            job = self.catalog.jobs.get(request.path_params["job_id"])
            if job is None:
                raise ApiError(404, f"job '{request.path_params['job_id']}' not found")
            return Reply(200, _public(job))

    # the processing job -------------------------------------------------------------------
    def _process(self, job: dict[str, Any], path: Path, ends: float) -> None:
        """The job's work (a kit `Jobs` thread, started with the upload's answer): read the
        file, wait until `ends` (the upload's answer plus `processing_seconds`), then apply
        it. The file is kept as the database's pending part when it loads (see `Catalog`)."""
        kept = False
        try:
            self._transition(job, status="processing")
            try:
                content, rows = _read_until(path, ends)
                database = self.catalog.load(job, content, rows, path)
            except Exception as exc:  # the file or its merge: the job fails, nothing changes
                self._transition(job, status="failed", message=_reason(exc),
                                 finished=_now())
            else:
                kept = True
                self._transition(job, status="completed", database=database,
                                 message=f"{job['rows']} rows loaded", finished=_now())
        finally:
            if not kept:
                path.unlink(missing_ok=True)
            self.busy.release(job["target"])

    def _transition(self, job: dict[str, Any], **changes: Any) -> None:
        with self.store.lock:
            job.update(changes)
            self.catalog.save()
            snapshot = _public(job)
        if job.get("callback"):
            self._notify(job, snapshot)

    def _notify(self, job: dict[str, Any], event: dict[str, Any]) -> None:
        """POST the job to its callback URL: loopback only (the sandbox never calls out)."""
        host = urlsplit(job["callback"]).hostname or ""
        try:
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                return
            request = urllib.request.Request(job["callback"], data=orjson.dumps(event),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5):
                pass
        except (OSError, ValueError):
            return
        with self.store.lock:
            job["callbacks_sent"] += 1

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Tests: wait for every job started so far."""
        for job in self.jobs.snapshot():
            self.jobs.wait(job["id"], timeout)

    # state --------------------------------------------------------------------------------
    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        catalog = self.catalog
        with self.store.lock:
            databases = {}
            for database_hash, database in catalog.databases.items():
                catalog.materialize(database)
                databases[database_hash] = {
                    "name": database["name"],
                    "folder": database["folder"],
                    "variables": database["variables"],
                    "row_count": database["row_count"],
                    "loads": database["loads"],
                    "rows": catalog.rows(database, max_rows),
                }
                if database.get("read_errors"):
                    databases[database_hash]["read_errors"] = database["read_errors"]
            return {
                "folders": {key: {"name": f["name"], "root": f["root"]}
                            for key, f in catalog.folders.items()},
                "databases": databases,
                "jobs": [_public(job) for job in catalog.jobs.values()],
                "uploads": catalog.uploads,
            }

    def reset(self) -> None:
        self.wait_idle()
        self.jobs.reset()
        with self.store.lock:
            self.store.wipe()
            self.catalog = Catalog(self.store)


def _read_until(path: Path, ends: float) -> tuple[FileContent, int]:
    """The file's content and row count, returned (or its error raised) no sooner than
    `ends`: a job takes `processing_seconds` at least, whatever its file."""
    try:
        content = read_dataset_file(path)
        return content, content.count_rows()
    finally:
        time.sleep(max(0.0, ends - time.monotonic()))


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {key: job[key] for key in ("id", "status", "action", "target", "database",
                                      "message", "rows", "file", "created", "finished",
                                      "callbacks_sent")}


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"the file could not be processed: {text}"[:500]
