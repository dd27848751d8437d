"""A small whole-file platform for testing the core's file path: an emulator and a target.

The emulator (`FilesEmulator`, served under `/testfiles/api` by a sandbox the tests start
with it) is built only from the sandbox kit. Its flow is the shape of the real file
platforms: upload a file as multipart field `file` (`POST /streams/{stream}/files`), then
commit the stream's files (`POST /streams/{stream}/commit`), which starts a background job
that lands the rows; `GET /jobs/{id}` tells when it is done. A commit while another job of
the stream runs is refused with 409 (a busy destination). With `?land=1` an upload lands
its rows at once (a platform whose upload is the confirmation).

The target (`TargetFiles`, run as `python tests/filesplatform.py --config ...`) writes
each stream as CSV through `target_core.filetarget.FileTarget`. Only this file knows the
"platform"; the core does the rest.
"""

from __future__ import annotations

import csv
import hmac
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
from singer_sdk import typing as th

from target_core.errors import ApiError, ConfigError
from target_core.filesink import FileLoad, FinishedFile
from target_core.filetarget import FileTarget
from target_core.http import ApiSession, HttpStatusError, MultipartFile, check_url, poll
from target_core.sandbox import (
    ApiError as SandboxError,
)
from target_core.sandbox import (
    BusyKeys,
    JobFailed,
    Jobs,
    Reply,
    Request,
    Routes,
    Store,
    default_error_body,
)

API_KEY = "tf-sandbox-key"
PLATFORM = "TestFiles"


# -- the emulator -------------------------------------------------------------------------


class FilesEmulator:
    name: ClassVar[str] = "testfiles"
    prefix: ClassVar[str] = "/testfiles/api"
    credential_sources: ClassVar[tuple[str, ...]] = ("header:x-api-key",)
    job_seconds: ClassVar[dict[str, float]] = {}
    """Per stream, how long a commit job takes (tests set it; default 0.05 s)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = Jobs("job")
        self.busy = BusyKeys()
        self.streams: dict[str, dict[str, Any]] = {}
        self._files = 0
        self.routes = Routes()
        self.routes.add("POST", "/streams/{stream}/files", self._upload)
        self.routes.add("POST", "/streams/{stream}/commit", self._commit)
        self.routes.add("GET", "/jobs/{job}", self._job)

    def handle(self, request: Request) -> Reply:
        key = request.header("x-api-key") or ""
        if not hmac.compare_digest(key.encode(), API_KEY.encode()):
            return Reply(401, self.error_body(401, "missing or wrong x-api-key"))
        return self.routes.dispatch(request)

    def error_body(self, status: int, message: str) -> Any:
        return default_error_body(status, message)

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        """Rows as objects by column name, read from the store (a stream may be large)."""
        with self.store.lock:
            return {"streams": {
                name: {"columns": s["columns"], "row_count": s["row_count"],
                       "rows": self.store.read_rows(name, max_rows, _as_objects),
                       "files": s["files"], "commits": s["commits"]}
                for name, s in self.streams.items()
            }, "jobs": self.jobs.snapshot()}

    def reset(self) -> None:
        self.jobs.reset()
        self.streams.clear()
        self.store.wipe()

    def _stream(self, name: str) -> dict[str, Any]:
        return self.streams.setdefault(name, {"columns": [], "row_count": 0, "files": {},
                                              "commits": 0})

    def _upload(self, request: Request) -> Reply:
        stream = request.path_params["stream"]
        form = request.multipart(self.store.root / "incoming")
        part = form.files.get("file")
        if part is None:
            raise SandboxError(400, "multipart field 'file' is required")
        with self.store.lock:
            self._files += 1
            file_id = f"f-{self._files}"
            kept = self.store.keep_file(f"{file_id}.csv", part.path)
            self._stream(stream)["files"][file_id] = {"name": part.file_name,
                                                     "bytes": part.size, "landed": False}
        if request.query.get("land") == "1":
            self._land(stream, [file_id])
        return Reply(201, {"file_id": file_id}, {"ETag": f'"{file_id}"', "Location": str(kept)})

    def _commit(self, request: Request) -> Reply:
        stream = request.path_params["stream"]
        body = request.json_object()
        files = body.get("files")
        if not isinstance(files, list) or not files:
            raise SandboxError(400, "files must be a non-empty list of file ids")
        with self.store.lock:
            known = self._stream(stream)["files"]
            if unknown := [f for f in files if f not in known]:
                raise SandboxError(404, f"no such files: {unknown}")
        if not self.busy.claim(stream):
            raise SandboxError(409, f"stream {stream!r} has a job running")

        def work() -> dict[str, Any]:
            try:
                return {"rows": self._land(stream, files)}
            finally:
                self.busy.release(stream)

        job = self.jobs.start("commit", work, self.job_seconds.get(stream, 0.05))
        return Reply(202, {"job": job.id})

    def _job(self, request: Request) -> Reply:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise SandboxError(404, "no such job")
        return Reply(200, {"state": job.state, "error": job.error, "result": job.result})

    def _land(self, stream: str, files: Sequence[str]) -> int:
        """Each file's rows appended to the stream's row file, 10,000 rows a line."""
        landed = 0
        for file_id in files:
            with self.store.file_path(f"{file_id}.csv").open(encoding="utf-8", newline="") as f, \
                    self.store.lock:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise JobFailed(f"{file_id} is empty")
                count = 0
                while rows := list(itertools.islice(reader, 10_000)):
                    if any(len(row) != len(header) for row in rows):
                        raise JobFailed(f"{file_id}: a row's width differs from the header's")
                    self.store.append_line(stream, orjson.dumps({"columns": header,
                                                                 "rows": rows}))
                    count += len(rows)
                state = self._stream(stream)
                state["columns"] = list(dict.fromkeys([*state["columns"], *header]))
                state["row_count"] += count
                state["files"][file_id]["landed"] = True
                state["commits"] += 1
            landed += count
        return landed


def _as_objects(batch: dict[str, Any]) -> list[dict[str, str]]:
    return [dict(zip(batch["columns"], row, strict=True)) for row in batch["rows"]]


# -- the target ----------------------------------------------------------------------------


class FilesLoad(FileLoad):
    """A stream's CSV files -> uploads, then one commit job polled until done."""

    def __init__(self, stream: str, session: ApiSession, config: dict[str, Any]) -> None:
        super().__init__(stream)
        self.session = session
        self.config = config
        self.max_file_bytes = config.get("max_file_bytes")
        self.confirms_each_file = config["confirm"] == "upload"
        self.file_ids: list[str] = []

    def upload(self, file: FinishedFile) -> None:
        route = f"streams/{self.stream}/files"
        params = {"land": "1"} if self.confirms_each_file else None
        answer = self._call(lambda: self.session.upload(
            route, MultipartFile("file", file.path, f"{self.stream}-{file.number}.csv",
                                 file.media_type), params=params))
        self.file_ids.append(answer["file_id"])

    def commit(self, files: Sequence[FinishedFile]) -> None:
        if self.confirms_each_file:
            return
        body = orjson.dumps({"files": self.file_ids})
        answer = self._call(lambda: self.session.post(
            f"streams/{self.stream}/commit", body, idempotent=False, busy_statuses=(409,),
            busy_timeout=self.config["processing_timeout"]))
        job = answer["job"]

        def check() -> dict | None:
            state = self._call(lambda: self.session.get(f"jobs/{job}"))
            if state["state"] == "failed":
                raise ApiError(f"stream '{self.stream}': {PLATFORM} job {job} failed: "
                               f"{state['error']}")
            return state if state["state"] == "succeeded" else None

        poll(check, what=f"{PLATFORM} job {job} of stream '{self.stream}'",
             timeout=self.config["processing_timeout"], interval=0.05, max_interval=0.5)

    def _call(self, call: Any) -> dict:
        try:
            return orjson.loads(call().content)
        except HttpStatusError as exc:
            raise ApiError(f"stream '{self.stream}': {PLATFORM} refused {exc.route} "
                           f"(HTTP {exc.status}): {exc.detail}", exc.status) from None


class TargetFiles(FileTarget):
    """Each stream as CSV files, uploaded and committed to the TestFiles emulator."""

    name = "target-testfiles"
    package_name = "singer-analytics-targets"
    config_jsonschema = th.PropertiesList(
        th.Property("api_url", th.StringType, required=True),
        th.Property("api_key", th.StringType, required=True, secret=True),
        th.Property("max_file_bytes", th.IntegerType),
        th.Property("batch_size_rows", th.IntegerType),
        th.Property("confirm", th.StringType, default="commit",
                    allowed_values=["commit", "upload"]),
        th.Property("processing_timeout", th.NumberType, default=30),
        th.Property("spool_dir", th.StringType),
        th.Property("refuse_streams", th.ArrayType(th.StringType), default=[]),
        th.Property("request_timeout", th.IntegerType, default=30),
        th.Property("max_retries", th.IntegerType, default=2),
    ).to_dict()

    def check_config(self) -> None:
        check_url(self.config["api_url"], "api_url")

    def spool_root(self) -> Path | None:
        return Path(self.config["spool_dir"]) if self.config.get("spool_dir") else None

    def open_load(self, stream: str) -> FileLoad:
        if stream in self.config["refuse_streams"]:
            raise ConfigError(f"no destination for stream '{stream}'")
        session = ApiSession(self.config["api_url"], platform=PLATFORM,
                             headers={"x-api-key": self.config["api_key"]},
                             timeout=self.config["request_timeout"],
                             max_retries=self.config["max_retries"], backoff_base=0.05)
        return FilesLoad(stream, session, dict(self.config))


if __name__ == "__main__":
    sys.exit(TargetFiles.cli())
