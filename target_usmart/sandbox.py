"""A faithful emulator of uSmart's programmatic access (``/work/shared/apis/usmart.md``).

Served by ``target-sandbox serve`` under ``/usmart``, so a target configured with
``api_url = http://127.0.0.1:PORT/usmart`` runs its real HTTP path with no account:

| route | what it does |
|---|---|
| ``POST /org/<org>/dataset:view`` | the dataset's files and output pipelines |
| ``POST /org/<org>/s3:generatePutRequest`` | signed PUT URL (here), Content-Type, reference |
| ``PUT  /s3/<bucket>/uploads/<id>/<name>?...`` | the upload (up to 5 GiB), checked like S3 |
| ``POST /org/<org>/file:create`` | a new file of a dataset from an uploaded reference |
| ``POST /org/<org>/file:updateRevision`` | a new revision of a file |
| ``POST /org/<org>/resourceContainer:create`` | a new output pipeline |
| ``POST /org/<org>/resourceContainer:process`` | the pipeline now serves the latest revisions |
| ``GET  /org/<org>/<resource>/latest/urql?limit(n,offset)`` | rows a pipeline (or a file) serves |
| ``GET/POST /_sandbox/settings`` | the emulator's settings (signed URLs' lifetime...) |

Actions need the headers ``api-key-id`` / ``api-key-secret`` (:data:`SANDBOX_KEY_ID`,
:data:`SANDBOX_KEY_SECRET`) and the org :data:`SANDBOX_ORG`; the signed PUT must carry none
of them (they are recorded when it does); it is signed with the kit's `SignedUrls` (method,
path, Content-Type, expiry), refused with S3's XML errors, and its body is kept in the store
(moved there when the server streamed it to disk). Every uploaded CSV is read with uSmart's
rules: the first record is the header, column types come from the first data row, a blank row
ends the ingest. Registration (``file:create`` / ``file:updateRevision``) checks the upload
(reference, size) and keeps the file as a revision; uSmart's ingest of it (structure, row
count, types, ``type_conflicts``, or why it cannot be read: ``unreadable``) runs once, when
its data is first read (the read route, the state, ``show``), as the platform's own ingest
runs after the upload and not inside the uploader's call.
What the contract leaves open ([?], [I]) is assumed here and listed in ``docs/usmart.md``:
the answers' shapes (``{"result": ...}``),
the ``file:create`` fields, the error body (``{"error": {"status", "message"}}``), 401 for
bad keys, 403 for a foreign org, and what ``urql`` returns (a JSON array of row objects).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import orjson

from target_core.sandbox import (
    ApiError,
    Reply,
    Request,
    Routes,
    SignatureRefused,
    SignedUrls,
    Store,
    default_error_body,
    s3_error_xml,
    served_elsewhere,
)

SANDBOX_KEY_ID = "us-sandbox-key-id"
SANDBOX_KEY_SECRET = "us-sandbox-key-secret"
SANDBOX_ORG = "sandbox-org"
SANDBOX_DATASET = "sandbox-dataset"
SANDBOX_PIPELINE = "sandbox-pipeline"
SANDBOX_PIPELINE_ID = "csv"
BUCKET = "usmart-sandbox-uploads"
DEFAULT_URL_EXPIRES_SECONDS = 900
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".xlsx":
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
_SETTINGS = {"signed_url_expires_seconds": DEFAULT_URL_EXPIRES_SECONDS, "expired_urls_to_issue": 0}
_META_VERSION = 1

# -- uSmart's CSV reading rules ------------------------------------------------------------------

Cell = tuple[str, bool]
"""One CSV field: its text and whether it was quoted."""

_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"\r\n]*)')
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?\Z")  # no ".8", no exponent: those read as text
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_BOOLEANS = {"true": True, "false": False}


class CsvError(ValueError):
    """A file uSmart cannot read (the registration call answers 400)."""


def csv_records(lines: Iterable[str]) -> Iterator[list[Cell] | None]:
    """The file's records as cells; ``None`` for a blank row. ``lines`` keep their line ends
    (open the file with ``newline=""``), so a quoted field may hold line breaks."""
    pending = ""
    for number, line in enumerate(lines, 1):
        pending += line
        if pending.count('"') % 2:
            continue  # inside a quoted field: the record goes on
        record, pending = pending, ""
        body = record.rstrip("\r\n") if record.endswith("\n") else record.rstrip("\r")
        if not body:
            yield None
        elif '"' not in body:
            yield [(text, False) for text in body.split(",")]
        else:
            yield _split_quoted(body, number)
    if pending:
        raise CsvError("the file ends inside a quoted field")


def _split_quoted(body: str, line: int) -> list[Cell]:
    cells: list[Cell] = []
    position = 0
    while True:
        match = _FIELD.match(body, position)
        assert match is not None  # the unquoted branch matches the empty string
        quoted, plain = match.groups()
        cells.append((quoted.replace('""', '"'), True) if quoted is not None else (plain, False))
        position = match.end()
        if position == len(body):
            return cells
        if body[position] != ",":
            raise CsvError(f"line {line}: a quote inside an unquoted field, or text after a "
                           "closing quote")
        position += 1


def infer_type(cell: Cell) -> str:
    """A column's type, from its cell in the first data row (uSmart's rule)."""
    text, quoted = cell
    if quoted or not text:
        return "text"
    if _NUMBER.match(text):
        return "number"
    if text.lower() in _BOOLEANS:
        return "boolean"
    if _DATE.match(text) and _valid(date.fromisoformat, text):
        return "date"
    if _DATETIME.match(text) and _valid(datetime.fromisoformat, text):
        return "datetime"
    return "text"


def _valid(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def decode_cell(cell: Cell, kind: str) -> tuple[Any, bool]:
    """(value, fits) of one cell in a column of type ``kind``: a quoted cell is text, an
    empty unquoted cell is null, a number loses its leading zeros (``int`` or ``Decimal``).
    A value that does not fit its column stays text and ``fits`` is False."""
    text, quoted = cell
    if quoted:
        return text, kind == "text"
    if not text:
        return None, True
    if kind == "text":
        return text, True
    if kind == "number":
        if not _NUMBER.match(text):
            return text, False
        return (Decimal(text) if "." in text else int(text)), True
    if kind == "boolean":
        value = _BOOLEANS.get(text.lower())
        return (text, False) if value is None else (value, True)
    if kind == "date":
        return text, bool(_DATE.match(text)) and _valid(date.fromisoformat, text)
    return text, bool(_DATETIME.match(text)) and _valid(datetime.fromisoformat, text)


@dataclass
class ParsedCsv:
    """What uSmart makes of one uploaded CSV."""

    columns: list[dict[str, str]]
    rows: int
    stopped_at_blank_row: int | None
    """Data row number (1-based) of the blank row that ended the ingest, if any."""
    type_conflicts: dict[str, int]
    """Per column, the cells that did not fit the type inferred from the first row."""


def parse_csv(path: Path) -> ParsedCsv:
    """One pass over an uploaded file: header, types from the first row, row count."""
    with open(path, encoding="utf-8-sig", newline="") as lines:
        records = csv_records(lines)
        header = next(records, None)
        if not header or all(not text for text, _ in header):
            raise CsvError("the file has no header row")
        names = [text for text, _ in header]
        kinds: list[str] = []
        conflicts: dict[str, int] = {}
        rows = 0
        stopped = None
        for record in records:
            if record is None:
                stopped = rows + 1
                break
            if len(record) != len(names):
                raise CsvError(f"data row {rows + 1} has {len(record)} fields, the header "
                               f"has {len(names)}")
            if not kinds:
                kinds = [infer_type(cell) for cell in record]
            for name, cell, kind in zip(names, record, kinds, strict=True):
                if not decode_cell(cell, kind)[1]:
                    conflicts[name] = conflicts.get(name, 0) + 1
            rows += 1
    kinds = kinds or ["text"] * len(names)
    columns = [{"name": name, "type": kind} for name, kind in zip(names, kinds, strict=True)]
    return ParsedCsv(columns, rows, stopped, conflicts)


def read_csv_rows(path: Path, offset: int, limit: int | None) -> list[dict[str, Any]]:
    """Rows ``offset`` .. ``offset + limit`` of an uploaded file as uSmart serves them."""
    out: list[dict[str, Any]] = []
    if limit is not None and limit <= 0:
        return out
    with open(path, encoding="utf-8-sig", newline="") as lines:
        records = csv_records(lines)
        names = [text for text, _ in next(records)]  # type: ignore[union-attr]
        kinds: list[str] = []
        for index, record in enumerate(records):
            if record is None:
                break
            if not kinds:
                kinds = [infer_type(cell) for cell in record]
            if index < offset:
                continue
            out.append({name: _json_value(decode_cell(cell, kind)[0])
                        for name, cell, kind in zip(names, record, kinds, strict=True)})
            if limit is not None and len(out) >= limit:
                break
    return out


def _json_value(value: Any) -> Any:
    """Decimals keep their digits in JSON (``0.80`` stays ``0.80``)."""
    return orjson.Fragment(str(value)) if isinstance(value, Decimal) else value


# -- S3-style presigned URLs ---------------------------------------------------------------------


def s3_error(status: int, code: str, message: str) -> Reply:
    """An S3 error: XML, not JSON (S3 answers a refused presigned request this way)."""
    return Reply.xml(status, s3_error_xml(code, message))



# -- the platform's state ------------------------------------------------------------------------


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fresh_state() -> dict[str, Any]:
    return {
        "version": _META_VERSION,
        "signing_key": secrets.token_hex(32),
        "settings": dict(_SETTINGS),
        "datasets": {
            SANDBOX_DATASET: {
                "title": "Sandbox dataset",
                "files": {},
                "resourceContainers": {
                    SANDBOX_PIPELINE: {"pipelineId": SANDBOX_PIPELINE_ID, "created": _now_text(),
                                       "refreshes": []},
                },
            },
        },
        "uploads": {},
    }


class UsmartCatalog:
    """Datasets, their files and revisions, output pipelines and uploaded objects.

    Metadata lives in the store's ``meta.json``; each uploaded object in ``objects/``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        with store.lock:
            self.state: dict[str, Any] = store.read_meta() or _fresh_state()
        self.signer = SignedUrls(bytes.fromhex(self.state["signing_key"]))

    @property
    def lock(self) -> Any:
        return self._store.lock

    @property
    def store_root(self) -> Path:
        return self._store.root

    def save(self) -> None:
        self._store.write_meta(self.state)

    def object_path(self, reference: str) -> Path:
        """Where the object uploaded under `reference` is kept (the store's `files/`)."""
        return self._store.file_path(_object_name(reference))

    def keep_object(self, reference: str, request: Request) -> tuple[int, str]:
        """The PUT's body kept as the object: moved when the server streamed it to disk
        (big files are never copied, nor held in memory). Its size and MD5 (S3's ETag)."""
        if request.body_path is None:
            return request.save_body(self.object_path(reference))
        with request.body_path.open("rb") as body:
            digest = hashlib.file_digest(body, "md5").hexdigest()
        size = request.body_path.stat().st_size
        self._store.keep_file(_object_name(reference), request.body_path)
        return size, digest

    def dataset(self, guid: Any) -> dict[str, Any]:
        if not isinstance(guid, str) or not guid:
            raise ApiError(400, "datasetGUID is required")
        dataset = self.state["datasets"].get(guid)
        if dataset is None:
            raise ApiError(404, f"dataset {guid} not found")
        return dataset

    def file(self, guid: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(dataset, file) of a file GUID."""
        return self._find("files", guid, "fileGUID", "file")

    def container(self, guid: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(dataset, resource container) of a resource container GUID."""
        return self._find("resourceContainers", guid, "resourceContainerGUID",
                          "resource container")

    def _find(self, kind: str, guid: Any, field: str, label: str
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(guid, str) or not guid:
            raise ApiError(400, f"{field} is required")
        for dataset in self.state["datasets"].values():
            if guid in dataset[kind]:
                return dataset, dataset[kind][guid]
        raise ApiError(404, f"{label} {guid} not found")

    def reset(self) -> None:
        with self.lock:
            self._store.wipe()
            self.state = _fresh_state()
            self.signer = SignedUrls(bytes.fromhex(self.state["signing_key"]))


def _object_name(reference: str) -> str:
    return hashlib.sha256(reference.encode()).hexdigest()


def _revision_record(reference: str, upload: Mapping[str, Any], number: int) -> dict[str, Any]:
    """A registered revision; what uSmart's ingest makes of it is filled in by
    `ingest_revision` when its data is first read (None until then)."""
    return {
        "revision": number,
        "reference": reference,
        "fileSize": upload["bytes"],
        "registered": _now_text(),
        "rows": None,
        "columns": None,
        "stopped_at_blank_row": None,
        "type_conflicts": None,
        "unreadable": None,
    }


def ingest_revision(revision: dict[str, Any], path: Path) -> bool:
    """uSmart's ingest of a revision's file, once (True: the revision changed). A file it
    cannot read keeps 0 rows and says why in ``unreadable``."""
    if revision["rows"] is not None:
        return False
    try:
        parsed = parse_csv(path)
    except (CsvError, UnicodeDecodeError, OSError) as exc:
        revision.update(rows=0, columns=[], type_conflicts={},
                        unreadable=f"the file cannot be read as CSV: {exc}")
        return True
    revision.update(rows=parsed.rows, columns=parsed.columns,
                    stopped_at_blank_row=parsed.stopped_at_blank_row,
                    type_conflicts=parsed.type_conflicts)
    return True


_LIMIT = re.compile(r"limit\((\d+),(\d+)\)\Z")
S3_MAX_PUT_BYTES = 5 * 1024**3
"""S3 takes a single PUT of up to 5 GiB."""


class UsmartEmulator:
    """uSmart's actions, S3 uploads and read route for one organisation."""

    name: ClassVar[str] = "usmart"
    prefix: ClassVar[str] = "/usmart"
    credential_sources: ClassVar[tuple[str, ...]] = ("header:api-key-id",)
    """Where the kit's per-credential rate limit finds the key."""
    max_upload_bytes: ClassVar[int] = S3_MAX_PUT_BYTES
    """Uploads to the signed URLs may pass the server's `max_body_bytes` (JSON bodies of
    the actions keep it): S3 takes files far bigger than any API call."""

    def __init__(self, store: Store) -> None:
        self.catalog = UsmartCatalog(store)
        self.routes = Routes()
        for method in ("GET", "POST"):
            self.routes.add(method, "/_sandbox/settings", self._settings)
        for method in ("PUT", "GET", "POST", "DELETE"):  # S3 judges the signature, not routes
            self.routes.add(method, f"/s3/{BUCKET}/uploads/{{upload}}/{{name}}", self._s3_put)
        self.routes.add("POST", "/org/{org}/{action}", self._action)
        self.routes.add("GET", "/org/{org}/{resource}/latest/urql", self._read)
        self._actions = {
            "dataset:view": self._view,
            "s3:generatePutRequest": self._generate_put,
            "file:create": self._create_file,
            "file:updateRevision": self._update_revision,
            "resourceContainer:create": self._create_container,
            "resourceContainer:process": self._process_container,
        }

    # -- the emulator contract -------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        try:
            return self.routes.dispatch(request)
        except ApiError as exc:
            return Reply(exc.status, self.error_body(exc.status, exc.message), exc.headers)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return default_error_body(status, message)

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        with self.catalog.lock:
            datasets = {}
            for guid, dataset in self.catalog.state["datasets"].items():
                files = {}
                for file_guid, file in dataset["files"].items():
                    revisions = []
                    for revision in file["revisions"]:
                        path = self.catalog.object_path(revision["reference"])
                        self._ingest(revision, path)
                        rows = ([] if revision.get("unreadable") or not path.exists()
                                else read_csv_rows(path, 0, max_rows))
                        revisions.append({**revision, "data": rows})
                    files[file_guid] = {"fileName": file["fileName"],
                                        "created": file["created"], "revisions": revisions}
                datasets[guid] = {"title": dataset["title"], "files": files,
                                  "resourceContainers": dataset["resourceContainers"]}
            return {"settings": self.catalog.state["settings"], "datasets": datasets,
                    "uploads": self.catalog.state["uploads"]}

    def reset(self) -> None:
        self.catalog.reset()

    def _ingest(self, revision: dict[str, Any], path: Path) -> None:
        """`ingest_revision`, kept in the metadata unless another process serves the data
        dir (``show`` beside a live server)."""
        if ingest_revision(revision, path) and not served_elsewhere(
                self.catalog.store_root.parent):
            self.catalog.save()

    # -- routing ---------------------------------------------------------------------------------
    def _action(self, request: Request) -> Reply:
        self._authenticate(request, request.path_params["org"])
        name = request.path_params["action"]
        action = self._actions.get(name)
        if action is None:
            raise ApiError(404, f"unknown action {name}")
        return action(request.json_object(), request)

    @staticmethod
    def _authenticate(request: Request, org: str) -> None:
        key_id, secret = request.header("api-key-id"), request.header("api-key-secret")
        if not key_id or not secret:
            raise ApiError(401, "missing api-key-id / api-key-secret headers")
        if not (hmac.compare_digest(key_id.encode(), SANDBOX_KEY_ID.encode())
                and hmac.compare_digest(secret.encode(), SANDBOX_KEY_SECRET.encode())):
            raise ApiError(401, "invalid API key")
        if org != SANDBOX_ORG:
            raise ApiError(403, f"this API key has no Provider role in organisation {org}")

    # -- emulator settings -----------------------------------------------------------------------
    def _settings(self, request: Request) -> Reply:
        """``signed_url_expires_seconds`` (how long a signed URL lives) and
        ``expired_urls_to_issue`` (the next N signed URLs are issued already expired)."""
        settings = self.catalog.state["settings"]
        if request.method == "POST":
            changes = request.json_object()
            unknown = set(changes) - set(_SETTINGS)
            if unknown:
                raise ApiError(400, f"unknown settings: {', '.join(sorted(unknown))}")
            for name, value in changes.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ApiError(400, f"{name} must be an integer >= 0")
            with self.catalog.lock:
                settings.update(changes)
                self.catalog.save()
        elif request.method != "GET":
            raise ApiError(405, "settings take GET or POST", {"Allow": "GET, POST"})
        return Reply(200, {name: settings.get(name, default)
                           for name, default in _SETTINGS.items()})

    # -- actions ---------------------------------------------------------------------------------
    def _view(self, body: dict[str, Any], request: Request) -> Reply:
        guid = body.get("datasetGUID")
        with self.catalog.lock:
            dataset = self.catalog.dataset(guid)
            files = [{"fileGUID": file_guid, "fileName": file["fileName"],
                      "revision": file["revisions"][-1]["revision"],
                      "fileSize": file["revisions"][-1]["fileSize"],
                      "created": file["created"], "updated": file["revisions"][-1]["registered"]}
                     for file_guid, file in dataset["files"].items()]
            containers = [{"resourceContainerGUID": container_guid,
                           "pipelineId": container["pipelineId"],
                           "lastProcessed": (container["refreshes"] or [{}])[-1].get("time")}
                          for container_guid, container in dataset["resourceContainers"].items()]
            return Reply(200, {"result": {"datasetGUID": guid, "title": dataset["title"],
                                          "files": files, "resourceContainers": containers}})

    def _generate_put(self, body: dict[str, Any], request: Request) -> Reply:
        name = body.get("fileName")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "fileName is required")
        base = name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        content_type = CONTENT_TYPES.get(Path(base).suffix.lower(), "application/octet-stream")
        reference = f"uploads/{uuid.uuid4()}/{base}"
        settings = self.catalog.state["settings"]
        expires_in = settings["signed_url_expires_seconds"]
        with self.catalog.lock:
            if settings.get("expired_urls_to_issue"):  # a test's way to get a stale URL
                settings["expired_urls_to_issue"] -= 1
                expires_in = -1
                self.catalog.save()
        # the URL points back at this server: the Host header says where that is
        path = f"/s3/{BUCKET}/{reference}"
        query = self.catalog.signer.sign("PUT", path, expires_in, {"content-type": content_type})
        url = f"http://{request.header('Host') or '127.0.0.1'}{self.prefix}{quote(path)}?{query}"
        return Reply(200, {"result": {"signedRequest": url, "contentType": content_type,
                                      "reference": reference}})

    def _s3_put(self, request: Request) -> Reply:
        """S3 checks a presigned request: the method, the path, the signed Content-Type
        and the expiry are bound by the signature; anything else is a 403 in XML."""
        params = request.path_params
        key = f"uploads/{params['upload']}/{unquote(params['name'])}"
        try:
            signed = self.catalog.signer.verify(request.method, f"/s3/{BUCKET}/{key}",
                                                request.query)
        except SignatureRefused as refused:
            return s3_error(403, refused.code, refused.message)
        if (request.header("Content-Type") or "") != signed.get("content-type"):
            return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated "
                            "does not match the signature you provided (the Content-Type "
                            "differs from the signed one)")
        leaked = sorted(name for name in ("api-key-id", "api-key-secret") if request.header(name))
        size, digest = self.catalog.keep_object(key, request)
        etag = f'"{digest}"'
        with self.catalog.lock:
            self.catalog.state["uploads"][key] = {
                "bytes": size, "etag": etag, "time": _now_text(),
                "contentType": request.header("Content-Type"), "key_headers_sent": leaked,
            }
            self.catalog.save()
        return Reply.empty(200, {"ETag": etag})

    def _uploaded(self, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        reference, size = body.get("reference"), body.get("fileSize")
        if not isinstance(reference, str) or not reference:
            raise ApiError(400, "reference is required (from s3:generatePutRequest)")
        name = body.get("fileName")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "fileName is required")
        upload = self.catalog.state["uploads"].get(reference)
        if upload is None:
            raise ApiError(400, f"nothing was uploaded to reference {reference}")
        if isinstance(size, bool) or not isinstance(size, int) or size != upload["bytes"]:
            raise ApiError(400, f"fileSize {size!r} does not match the {upload['bytes']} bytes "
                           "uploaded")
        return reference, upload

    def _create_file(self, body: dict[str, Any], request: Request) -> Reply:
        with self.catalog.lock:
            dataset = self.catalog.dataset(body.get("datasetGUID"))
            reference, upload = self._uploaded(body)
            guid = str(uuid.uuid4())
            dataset["files"][guid] = {
                "fileName": body["fileName"], "created": _now_text(),
                "revisions": [_revision_record(reference, upload, 1)],
            }
            self.catalog.save()
        return Reply(200, {"result": {"fileGUID": guid, "revision": 1}})

    def _update_revision(self, body: dict[str, Any], request: Request) -> Reply:
        with self.catalog.lock:
            _, file = self.catalog.file(body.get("fileGUID"))
            reference, upload = self._uploaded(body)
            number = file["revisions"][-1]["revision"] + 1
            file["revisions"].append(_revision_record(reference, upload, number))
            file["fileName"] = body["fileName"]
            self.catalog.save()
        return Reply(200, {"result": {"fileGUID": body["fileGUID"], "revision": number}})

    def _create_container(self, body: dict[str, Any], request: Request) -> Reply:
        pipeline = body.get("pipelineId")
        if not isinstance(pipeline, str) or not pipeline:
            raise ApiError(400, "pipelineId is required")
        with self.catalog.lock:
            dataset = self.catalog.dataset(body.get("datasetGUID"))
            guid = str(uuid.uuid4())
            dataset["resourceContainers"][guid] = {"pipelineId": pipeline,
                                                   "created": _now_text(), "refreshes": []}
            self.catalog.save()
        return Reply(200, {"result": {"resourceContainerGUID": guid}})

    def _process_container(self, body: dict[str, Any], request: Request) -> Reply:
        """The pipeline now serves each file's latest revision (synchronously, here)."""
        guid = body.get("resourceContainerGUID")
        with self.catalog.lock:
            dataset, container = self.catalog.container(guid)
            served = {file_guid: file["revisions"][-1]["revision"]
                      for file_guid, file in dataset["files"].items()}
            container["refreshes"].append({"time": _now_text(), "files": served})
            self.catalog.save()
        return Reply(200, {"result": {"resourceContainerGUID": guid, "status": "processed"}})

    # -- read route ------------------------------------------------------------------------------
    def _read(self, request: Request) -> Reply:
        """A pipeline serves the revisions of its last refresh, file after file; a file GUID
        serves its latest revision. ``limit(n,offset)`` pages; without it, every row."""
        self._authenticate(request, request.path_params["org"])
        resource = request.path_params["resource"]
        limit, offset = _paging(request)
        with self.catalog.lock:
            try:
                dataset, container = self.catalog.container(resource)
            except ApiError:
                _, file = self.catalog.file(resource)
                parts = [file["revisions"][-1]]
            else:
                served = (container["refreshes"] or [{"files": {}}])[-1]["files"]
                parts = [dataset["files"][file_guid]["revisions"][number - 1]
                         for file_guid, number in served.items()
                         if file_guid in dataset["files"]]
            for revision in parts:
                self._ingest(revision, self.catalog.object_path(revision["reference"]))
        rows: list[dict[str, Any]] = []
        for revision in parts:
            wanted = None if limit is None else limit - len(rows)
            if wanted is not None and wanted <= 0:
                break
            if revision.get("unreadable"):
                continue  # uSmart's ingest could not read it: it serves no rows
            rows += read_csv_rows(self.catalog.object_path(revision["reference"]), offset,
                                  wanted)
            offset = max(0, offset - revision["rows"])
        return Reply(200, rows)


def _paging(request: Request) -> tuple[int | None, int]:
    """``limit(n,offset)`` from the query string (a parameter without a value); None: all."""
    for key in request.query:
        if match := _LIMIT.match(key):
            return int(match.group(1)), int(match.group(2))
    return None, 0


__all__ = [
    "SANDBOX_DATASET",
    "SANDBOX_KEY_ID",
    "SANDBOX_KEY_SECRET",
    "SANDBOX_ORG",
    "SANDBOX_PIPELINE",
    "CsvError",
    "UsmartEmulator",
    "csv_records",
    "decode_cell",
    "infer_type",
    "ingest_revision",
    "parse_csv",
    "read_csv_rows",
]
