"""The DataInsider (Rocket.BI) API, one method per route (see docs/datainsider.md): the
warehouse routes (`DataInsiderClient`) and the Data Lake file sync (`LakeClient`).

Routes (base `https://<client>.datainsider.co/api`; the `api_key` travels in the JSON body,
or in the query string of GET and DELETE; JSON keys in snake_case):

| method | route                          | what for                                        |
|--------|--------------------------------|-------------------------------------------------|
| POST   | `ingestion/csv/schema`         | create the database and table, add new columns  |
| GET    | `databases/<db>/tables/<tbl>`  | the stored columns, in their stored order       |
| POST   | `ingestion/batch`              | positional rows (JSON)                          |
| POST   | `ingestion/csv`                | rows as CSV text (writes NULLs)                 |
| DELETE | `ingestion/<db>/<tbl>`         | truncate                                        |

File sync (the server's v1.4.19 routes and the vendor's "File upload" page; one key per
server, `lake_api_key`, in the JSON body of start and end):

| method | route                                   | what for                               |
|--------|-----------------------------------------|----------------------------------------|
| POST   | `ingestion/file/sync/start`             | `{name, path, sync_type}` -> `sync_id` |
| POST   | `lake/file/upload?path=&sync_id=`       | one file, multipart field `file`       |
| POST   | `ingestion/file/sync/end`               | `{sync_id}` -> `{"success"}`           |

Errors come as `{"code", "reason", "message"}` (the lake's upload: `{"code", "msg"}`, code 0
for success); they are turned into lines a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from target_core.errors import ApiError, PayloadTooLarge
from target_core.http import ApiSession, HttpStatusError, MultipartFile

PLATFORM = "DataInsider"
CSV_SETTING = {"include_header": False, "delimiter": ",", "add_batch_info": False}
_encode = msgspec.json.encode


@dataclass(frozen=True)
class BatchCounts:
    """What `ingestion/batch` says it did with the rows of one call."""

    total: int
    inserted: int
    invalid: int
    skipped: int
    failed: int

    @classmethod
    def from_answer(cls, answer: Any) -> BatchCounts:
        if not isinstance(answer, dict):
            raise ApiError(f"{PLATFORM} answered ingestion/batch without its row counts")
        fields = ("total_records", "total_inserted_records", "total_invalid_records",
                  "total_skipped_records", "total_failed_records")
        values = [answer.get(name, 0) for name in fields]
        if not all(isinstance(value, int) for value in values) or "total_records" not in answer:
            raise ApiError(f"{PLATFORM} answered ingestion/batch without its row counts")
        return cls(*values)


class DataInsiderClient:
    """Calls the warehouse routes with one API key."""

    def __init__(self, session: ApiSession, api_key: str) -> None:
        self.session = session
        self.api_key = api_key

    def register_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Create the database and table, or add the columns the stored table lacks."""
        answer = self._call("POST", "ingestion/csv/schema", {"schema": schema},
                            table=f"{schema['db_name']}.{schema['name']}")
        return answer if isinstance(answer, dict) else {}

    def table(self, database: str, table: str) -> dict[str, Any]:
        """The stored table schema (its columns in stored order)."""
        route = f"databases/{quote(database, safe='')}/tables/{quote(table, safe='')}"
        answer = self._call("GET", route, None, table=f"{database}.{table}")
        if not isinstance(answer, dict) or not isinstance(answer.get("columns"), list):
            raise ApiError(f"{PLATFORM} answered {route} without the table's columns")
        return answer

    def batch_body(self, database: str, table: str, records_json: bytes) -> bytes:
        """The body of an `ingestion/batch` call; `records_json` is the JSON text of the
        list of positional rows."""
        head = orjson.dumps({"api_key": self.api_key, "db_name": database, "tbl_name": table})
        return head[:-1] + b',"records":' + records_json + b"}"

    def insert_batch(self, database: str, table: str, body: bytes) -> BatchCounts:
        """Positional rows (a body from `batch_body`); returns the answer's counters."""
        answer = self._call("POST", "ingestion/batch", body, table=f"{database}.{table}")
        return BatchCounts.from_answer(answer)

    def csv_body(self, database: str, table: str, pieces: Iterable[bytes]) -> bytes:
        """The body of an `ingestion/csv` call: rows as CSV text (no header), given in
        pieces each already escaped as the inside of a JSON string (no pass over the whole
        text escapes it; the cells of only one piece exist at a time while they are made)."""
        head = _encode({"api_key": self.api_key, "db_name": database, "tbl_name": table,
                        "csv_setting": CSV_SETTING, "data": ""})
        return b"".join([head[:-2], *pieces, b'"}'])  # head: up to the opening quote of data

    def insert_csv(self, database: str, table: str, body: bytes) -> int:
        """CSV rows (a body from `csv_body`); returns `row_inserted`."""
        answer = self._call("POST", "ingestion/csv", body, table=f"{database}.{table}")
        inserted = answer.get("row_inserted") if isinstance(answer, dict) else None
        if not isinstance(inserted, int) or not answer.get("succeed", False):
            raise ApiError(f"{PLATFORM} did not confirm the CSV rows for {database}.{table}: "
                           f"succeed={answer.get('succeed') if isinstance(answer, dict) else None}")
        return inserted

    def truncate(self, database: str, table: str) -> None:
        route = f"ingestion/{quote(database, safe='')}/{quote(table, safe='')}"
        self._call("DELETE", route, None, table=f"{database}.{table}")

    # -- one call --------------------------------------------------------------------------

    def _call(self, method: str, route: str, body: dict[str, Any] | bytes | None,
              *, table: str = "") -> Any:
        params = None
        if isinstance(body, dict):
            body = orjson.dumps({"api_key": self.api_key, **body})
        elif body is None:
            params = {"api_key": self.api_key}
        try:
            # Ingestion is retried on 5xx like Graphite Note's fills (at least once, see
            # docs/datainsider.md): the platform applies a batch whole or not at all.
            response = self.session.request(
                method, route, body=body, params=params, idempotent=True,
                content_type="application/json" if body is not None else None)
        except HttpStatusError as exc:
            raise self._explain(exc, table) from None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ApiError(f"{PLATFORM} answered {route} with a body that is not JSON",
                           response.status_code) from None

    @staticmethod
    def _explain(exc: HttpStatusError, table: str) -> ApiError:
        status, route = exc.status, exc.route.split("?")[0]
        reason, message = _envelope(exc)
        said = f": {message}"
        if status == 413:
            return PayloadTooLarge(f"{PLATFORM} refused the batch as too large (HTTP 413)", 413)
        if status == 401:
            text = (f"{PLATFORM} refused the API key (HTTP 401 {reason or ''} on {route}): "
                    "check api_key")
        elif status == 403:
            text = (f"{PLATFORM} denied {route} (HTTP 403 {reason or ''}): the API key needs "
                    "permission to create and edit databases (database:create, database:edit)")
        elif status == 404 and reason is None:
            text = (f"{PLATFORM} does not know the API key (HTTP 404 on {route}): check "
                    "api_key")
        elif status == 404 or reason in ("db_not_found", "table_not_found"):
            text = f"{PLATFORM} has no table {table} (HTTP {status} {reason} on {route}){said}"
        elif status == 429:
            text = (f"{PLATFORM} kept refusing calls for the rate limit (HTTP 429 on {route}): "
                    "lower rate_limit_per_minute or raise max_retries")
        else:
            text = f"{PLATFORM} failed on {route} for {table} (HTTP {status} {reason or ''}){said}"
        return ApiError(" ".join(text.split()), status)


def _envelope(exc: HttpStatusError) -> tuple[str | None, str]:
    """(reason, message) of an error answer `{"code", "reason", "message"}`; the message is
    the answer's text when it has none."""
    try:
        envelope = orjson.loads(exc.detail)
    except orjson.JSONDecodeError:
        envelope = None
    reason = envelope.get("reason") if isinstance(envelope, dict) else None
    message = envelope.get("message") if isinstance(envelope, dict) else None
    return reason, message if isinstance(message, str) and message else exc.detail


SYNC_TYPES = {False: "IncrementalSync", True: "FullSync"}
"""load_method overwrite -> FullSync (the directory is replaced on sync end)."""
LAKE_CODES = {1: "Fail", 2: "Exception", 4: "InvalidParam", 7: "NotFound", 9: "NotExist",
              10: "AlreadyExist", 18: "NotPermit", 22: "WrongAuth"}
"""The lake's answer codes, from the web client's `LakeHouseResponse` enum (0: success)."""


class LakeClient(DataInsiderClient):
    """The Data Lake file sync, with the server's one file-sync key (`lake_api_key`)."""

    def start_sync(self, name: str, path: str, replace: bool) -> int:
        """A new sync of the directory `path`; FullSync when `replace`. Returns its id."""
        answer = self._call("POST", "ingestion/file/sync/start", {
            "name": name, "path": path, "sync_type": SYNC_TYPES[replace]})
        sync_id = answer.get("sync_id") if isinstance(answer, dict) else None
        if not isinstance(sync_id, int) or isinstance(sync_id, bool):
            raise ApiError(f"{PLATFORM} answered ingestion/file/sync/start without a sync_id")
        return sync_id

    def upload(self, path: str, sync_id: int, file: MultipartFile) -> None:
        """One file into the sync's directory; the answer's `code` must be 0."""
        route = "lake/file/upload"
        try:
            # Repeating an upload whose answer was lost puts the same file name again (the
            # file replaces itself): safe to retry after a dropped connection or a 5xx.
            # `overwrite` is the lake web UI's own upload parameter (assumed understood here)
            response = self.session.upload(route, file, idempotent=True, params={
                "path": path, "sync_id": sync_id, "overwrite": "true"})
        except HttpStatusError as exc:
            raise self._explain(exc, path) from None
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        code = answer.get("code") if isinstance(answer, dict) else None
        if code != 0:
            said = answer.get("msg") if isinstance(answer, dict) else None
            name = LAKE_CODES.get(code, "no code") if isinstance(code, int) else "no code"
            raise ApiError(f"{PLATFORM} refused file {file.file_name} for lake directory "
                           f"{path} (code {code} {name}): {said or 'no message'}",
                           response.status_code)

    def end_sync(self, sync_id: int) -> None:
        """End the sync: a FullSync's files replace the directory now. `success` must be
        true."""
        try:
            answer = self._call("POST", "ingestion/file/sync/end", {"sync_id": sync_id})
        except ApiError as exc:
            if "already ended" not in str(exc):
                raise
            return  # our own end, repeated after its answer was lost: it took effect
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise ApiError(f"{PLATFORM} did not end file sync {sync_id}: success="
                           f"{answer.get('success') if isinstance(answer, dict) else None}")

    @staticmethod
    def _explain(exc: HttpStatusError, where: str) -> ApiError:
        status, route = exc.status, exc.route.split("?")[0]
        message = _envelope(exc)[1]
        if status == 400 and ("api key" in message or "`api_key`" in message):
            text = (f"{PLATFORM} refused the file sync key (HTTP 400 on {route}: {message}): "
                    "check lake_api_key (file sync checks one key, set by the server's "
                    "administrator in file_sync.default_api_key)")
        elif status == 413:
            text = (f"{PLATFORM} refused a file for {where} as too large (HTTP 413 on {route})")
        elif status == 429:
            text = (f"{PLATFORM} kept refusing calls for the rate limit (HTTP 429 on {route}): "
                    "lower rate_limit_per_minute or raise max_retries")
        else:
            where_text = f" for {where}" if where else ""
            text = f"{PLATFORM} failed on {route}{where_text} (HTTP {status}): {message}"
        return ApiError(" ".join(text.split()), status)
