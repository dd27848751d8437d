"""A faithful emulator of the Graphite Note dataset API (``/work/shared/apis/graphitenote.md``).

Served by ``target-sandbox serve`` under ``/graphitenote/api``, so a target configured with
``api_url = http://127.0.0.1:PORT/graphitenote/api`` runs its real HTTP path with no account.
It checks what the real API is documented to check (bearer token, ``user-code``, required
fields, column types, the ``insert-data`` string and its gzip+base64 form, value types, an
existing dataset, overlapping fills) and answers with the documented shapes and status codes.
The error body shape of the real API is unknown; ours is ``{"error": {"status", "message"}}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from target_core.sandbox.emulator import (
    ApiError,
    BusyKeys,
    Reply,
    Request,
    Routes,
    default_error_body,
)
from target_core.sandbox.store import Store

SANDBOX_TOKEN = "gn-sandbox-token"
SANDBOX_USER_CODE = "gn-sandbox-user"
SANDBOX_DATASET_CODE = "sandbox-dataset"
SANDBOX_DATASET_NAME = "Sandbox dataset"

COLUMN_TYPES = frozenset({"dimension", "measure"})
COLUMN_SUBTYPES = frozenset({"text", "numeric", "date", "datetime"})
# a gzip bomb in insert-data must not eat the machine: refuse what inflates beyond this
MAX_INFLATED_BYTES = 1024 * 1024 * 1024
_META_VERSION = 1


# columns and rows ----------------------------------------------------------------------------
def parse_columns(value: Any, *, required: bool) -> list[dict[str, str]]:
    """Validated column definitions, keeping only the documented keys."""
    if value is None:
        if required:
            raise ApiError(400, "columns is required")
        return []
    if not isinstance(value, list) or (required and not value):
        raise ApiError(
            400, "columns must be a non-empty list" if required else "columns must be a list"
        )
    columns: list[dict[str, str]] = []
    seen: set[str] = set()
    for index, column in enumerate(value):
        if not isinstance(column, dict):
            raise ApiError(400, f"columns[{index}] must be an object")
        name = column.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, f"columns[{index}].name must be a non-empty string")
        if name in seen:
            raise ApiError(400, f"columns[{index}]: duplicate column name {name!r}")
        seen.add(name)
        if column.get("type") not in COLUMN_TYPES:
            raise ApiError(400, f"column {name!r}: type must be one of dimension, measure")
        if column.get("subtype") not in COLUMN_SUBTYPES:
            raise ApiError(
                400, f"column {name!r}: subtype must be one of text, numeric, date, datetime"
            )
        parsed = {"name": name, "type": column["type"], "subtype": column["subtype"]}
        for key in ("alias", "format"):
            if key in column and column[key] is not None:
                if not isinstance(column[key], str):
                    raise ApiError(400, f"column {name!r}: {key} must be a string")
                parsed[key] = column[key]
        columns.append(parsed)
    return columns


def merge_columns(
    known: list[dict[str, str]], incoming: list[dict[str, str]]
) -> list[dict[str, str]]:
    """Columns by name in order of first appearance; a later definition replaces an earlier."""
    merged = {column["name"]: column for column in known}
    for column in incoming:
        merged[column["name"]] = column
    return list(merged.values())


def decode_insert_data(text: Any, compressed: bool) -> tuple[list[Any], bytes]:
    """``insert-data`` is a string: JSON rows, or base64(gzip(JSON rows)) when compressed.

    Returns the rows and their JSON text (kept to be stored as it came)."""
    if not isinstance(text, str):
        raise ApiError(400, "insert-data must be a string (JSON text of a list of rows)")
    raw: bytes | str = text
    if compressed:
        try:
            packed = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "insert-data is not valid base64 (compressed is true)") from None
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(packed, MAX_INFLATED_BYTES + 1)
        except zlib.error:
            raise ApiError(400, "insert-data is not gzip data (compressed is true)") from None
        if len(raw) > MAX_INFLATED_BYTES:
            raise ApiError(413, f"insert-data inflates to more than {MAX_INFLATED_BYTES} bytes")
        if not inflater.eof:
            raise ApiError(400, "insert-data gzip stream is truncated")
    try:
        rows = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"insert-data is not valid JSON: {exc}") from None
    if not isinstance(rows, list):
        raise ApiError(400, "insert-data must be a JSON list of rows")
    text_bytes = raw.encode() if isinstance(raw, str) else raw
    return rows, text_bytes


_DATE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\Z")
_DATETIME = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\Z"
)


def _is_numeric(value: Any) -> bool:
    return value is None or type(value) in (int, float)


def _is_text(value: Any) -> bool:
    return value is None or type(value) is str


def _is_date(value: Any) -> bool:
    return value is None or (type(value) is str and _DATE.match(value) is not None)


def _is_datetime(value: Any) -> bool:
    return value is None or (type(value) is str and _DATETIME.match(value) is not None)


_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "numeric": (_is_numeric, "a JSON number or null"),
    "text": (_is_text, "a string or null"),
    "date": (_is_date, "a 'YYYY-MM-DD' string or null"),
    "datetime": (_is_datetime, "a 'YYYY-MM-DD HH:MM:SS' string or null"),
}
_NONE = type(None)
_VALUE_TYPES: dict[str, frozenset[type]] = {
    "numeric": frozenset({int, float, _NONE}),  # bool is its own type: refused
    "text": frozenset({str, _NONE}),
    "date": frozenset({str, _NONE}),
    "datetime": frozenset({str, _NONE}),
}
_VALUE_PATTERNS = {"date": _DATE, "datetime": _DATETIME}


def _column_is_valid(values: tuple[Any, ...], subtype: str) -> bool:
    """Fast whole-column check (C-level loops); the slow per-value loop runs only on failure."""
    if not {type(value) for value in values} <= _VALUE_TYPES[subtype]:
        return False
    pattern = _VALUE_PATTERNS.get(subtype)
    if pattern is None:
        return True
    return all(map(pattern.match, [value for value in values if value is not None]))


def check_rows(rows: list[Any], columns: list[dict[str, str]]) -> None:
    """Checks every row against the columns.

    Nothing is stored unless every row passes, so a 400 leaves the dataset untouched. Errors
    name the first bad row (0-based) and column, so a loader can point at the record.
    """
    if not rows:
        return
    width = len(columns)
    if {type(row) for row in rows} != {list} or set(map(len, rows)) != {width}:
        for index, row in enumerate(rows):
            if type(row) is not list:
                raise ApiError(400, f"insert-data row {index}: must be a list of values")
            if len(row) != width:
                raise ApiError(
                    400, f"insert-data row {index}: has {len(row)} values, columns has {width}"
                )
    for column, values in zip(columns, zip(*rows, strict=True), strict=True):
        subtype = column["subtype"]
        if _column_is_valid(values, subtype):
            continue
        check, expected = _VALUE_CHECKS[subtype]
        index = next(index for index, value in enumerate(values) if not check(value))
        raise ApiError(
            400,
            f"insert-data row {index}, column {column['name']!r} ({subtype}): expected {expected}",
        )


def stored_batch(columns: list[dict[str, str]], rows_json: bytes) -> bytes:
    """One fill as one line: its column names and its rows' JSON text, as the client sent it."""
    if b"\n" in rows_json or b"\r" in rows_json:  # pretty-printed: one line is needed
        rows_json = orjson.dumps(orjson.loads(rows_json))
    names = orjson.dumps([column["name"] for column in columns])
    return b'{"columns":' + names + b',"rows":' + rows_json + b"}"


def rows_as_objects(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored fill -> its rows as {column name: value}."""
    names = batch["columns"]
    return [dict(zip(names, row, strict=True)) for row in batch["rows"]]


# datasets ------------------------------------------------------------------------------------
def _fresh_dataset(name: str, description: str | None, code: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "table-name": f"dataset_{code}",
        "columns": [],
        "row_count": 0,
        "rows_bytes": 0,
        "fills": 0,
        "completes": 0,
        "truncates": 0,
    }


class DatasetCatalog:
    """The tenant's datasets: metadata in ``meta.json``, each dataset's rows in its own file.

    The metadata (counts, columns, each row file's committed length) is rewritten per change;
    rows are only ever appended, or truncated by a replace fill.
    """

    def __init__(self, store: Store):
        self._store = store
        with store.lock:
            meta = store.read_meta()
            self._datasets: dict[str, dict[str, Any]] = (
                meta["datasets"] if meta is not None else self._seed()
            )
            for code, dataset in self._datasets.items():
                store.trim_rows(code, dataset["rows_bytes"])

    @staticmethod
    def _seed() -> dict[str, dict[str, Any]]:
        code = SANDBOX_DATASET_CODE
        return {code: _fresh_dataset(SANDBOX_DATASET_NAME, None, code)}

    def _save(self) -> None:
        self._store.write_meta({"version": _META_VERSION, "datasets": self._datasets})

    def require(self, code: str) -> dict[str, Any]:
        dataset = self._datasets.get(code)
        if dataset is None:
            raise ApiError(404, f"dataset {code!r} not found")
        return dataset

    def create(self, name: str, description: str | None, columns: list[dict[str, str]]) -> str:
        with self._store.lock:
            code = secrets.token_hex(6)
            while code in self._datasets:
                code = secrets.token_hex(6)
            dataset = _fresh_dataset(name, description, code)
            dataset["columns"] = columns
            self._datasets[code] = dataset
            self._save()
            return code

    def fill(
        self, code: str, columns: list[dict[str, str]], rows: list[Any], rows_json: bytes,
        append: bool,
    ) -> None:
        with self._store.lock:
            dataset = self.require(code)
            if not append:
                self._store.truncate_rows(code)
                dataset["row_count"] = 0
                dataset["rows_bytes"] = 0
                dataset["columns"] = []
                dataset["truncates"] += 1
            dataset["columns"] = merge_columns(dataset["columns"], columns)
            if rows:
                line = stored_batch(columns, rows_json)
                dataset["rows_bytes"] = self._store.append_line(code, line)
            dataset["row_count"] += len(rows)
            dataset["fills"] += 1
            self._save()

    def complete(self, code: str) -> int:
        with self._store.lock:
            dataset = self.require(code)
            dataset["completes"] += 1
            self._save()
            return dataset["row_count"]

    def snapshot(self, max_rows: int | None) -> dict[str, Any]:
        with self._store.lock:
            datasets = {}
            for code, dataset in self._datasets.items():
                limit = (
                    dataset["row_count"]
                    if max_rows is None
                    else min(max_rows, dataset["row_count"])
                )
                datasets[code] = {
                    "name": dataset["name"],
                    "columns": dataset["columns"],
                    "row_count": dataset["row_count"],
                    "fills": dataset["fills"],
                    "completes": dataset["completes"],
                    "truncates": dataset["truncates"],
                    "rows": self._store.read_rows(code, limit, rows_as_objects),
                }
            return {"datasets": datasets}

    def reset(self) -> None:
        with self._store.lock:
            self._store.wipe()
            self._datasets = self._seed()


# the API -------------------------------------------------------------------------------------
class GraphiteNoteEmulator:
    """``POST /dataset-create``, ``/dataset-fill``, ``/dataset-complete`` for one tenant
    (token :data:`SANDBOX_TOKEN`, user code :data:`SANDBOX_USER_CODE`)."""

    name: ClassVar[str] = "graphitenote"
    prefix: ClassVar[str] = "/graphitenote/api"

    def __init__(self, store: Store):
        self.catalog = DatasetCatalog(store)
        # fills in progress: a second fill of the same dataset meanwhile gets 409
        self.busy = BusyKeys()
        self._routes = Routes()
        self._routes.add("POST", "/dataset-create", self._create)
        self._routes.add("POST", "/dataset-fill", self._fill)
        self._routes.add("POST", "/dataset-complete", self._complete)

    def handle(self, request: Request) -> Reply:
        try:
            self._authenticate(request)
            return self._routes.dispatch(request)
        except ApiError as exc:
            return Reply(exc.status, self.error_body(exc.status, exc.message), exc.headers)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return default_error_body(status, message)

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        return self.catalog.snapshot(max_rows)

    def reset(self) -> None:
        self.catalog.reset()

    # checks shared by every route -----------------------------------------------------------
    @staticmethod
    def _authenticate(request: Request) -> None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        if not hmac.compare_digest(token.strip().encode(), SANDBOX_TOKEN.encode()):
            raise ApiError(401, "invalid token")

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        body = request.json_object()
        user_code = body.get("user-code")
        if not isinstance(user_code, str) or not user_code:
            raise ApiError(400, "user-code is required")
        if user_code != SANDBOX_USER_CODE:
            raise ApiError(403, "user-code does not belong to this token's tenant")
        return body

    def _dataset(self, body: Mapping[str, Any]) -> str:
        code = body.get("dataset-code")
        if not isinstance(code, str) or not code:
            raise ApiError(400, "dataset-code is required")
        self.catalog.require(code)
        return code

    # routes ---------------------------------------------------------------------------------
    def _create(self, request: Request) -> Reply:
        body = self._body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, "description must be a string")
        columns = parse_columns(body.get("columns"), required=False)
        code = self.catalog.create(name, description, columns)
        data = {"dataset-code": code, "table-name": f"dataset_{code}", "columns": len(columns)}
        return Reply(200, {"data": data})

    def _fill(self, request: Request) -> Reply:
        body = self._body(request)
        code = self._dataset(body)
        columns = parse_columns(body.get("columns"), required=True)
        if "insert-data" not in body:
            raise ApiError(400, "insert-data is required")
        compressed = _flag(body, "compressed", default=False)
        append = _flag(body, "append", default=True)
        if not self.busy.claim(code):
            raise ApiError(409, f"dataset {code!r} is being filled by another request")
        try:
            rows, rows_json = decode_insert_data(body["insert-data"], compressed)
            check_rows(rows, columns)
            self.catalog.fill(code, columns, rows, rows_json, append)
        finally:
            self.busy.release(code)
        return Reply(200, _success(code, len(rows)))

    def _complete(self, request: Request) -> Reply:
        code = self._dataset(self._body(request))
        return Reply(200, _success(code, self.catalog.complete(code)))


def _flag(body: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false")
    return value


def _success(code: str, rows_count: int) -> dict[str, Any]:
    return {
        "data": {"status": "success", "details": {"dataset-code": code, "rows-count": rows_count}}
    }
