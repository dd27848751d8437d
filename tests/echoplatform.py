"""An emulator that shows back what it received, built only from the sandbox kit.

Tests of `ApiSession` and of the kit itself use it: every route answers with what the
server parsed (method, path parameters, query, the credential headers it saw, body size
and MD5, multipart fields and files), so a test can check what went over the wire.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from target_core.sandbox import (
    ApiError,
    JobFailed,
    Jobs,
    Reply,
    Request,
    Routes,
    SignatureRefused,
    SignedUrls,
    Store,
    default_error_body,
    s3_error_xml,
)


class EchoEmulator:
    name: ClassVar[str] = "echo"
    prefix: ClassVar[str] = "/echo"
    credential_sources: ClassVar[tuple[str, ...]] = ("header:x-key", "query:api_key",
                                                     "json:api_key")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = Jobs("echo-job")
        self.signing = SignedUrls()
        self.seen_bodies: list[dict[str, Any]] = []
        self.routes = Routes()
        for method in ("GET", "POST", "PUT", "DELETE"):
            self.routes.add(method, "/things/{thing}", self._echo)
        self.routes.add("GET", "/things/{thing}/parts/{part}", self._echo)
        self.routes.add("POST", "/upload", self._upload)
        self.routes.add("POST", "/sign/{name}", self._sign)
        self.routes.add("PUT", "/signed/{name}", self._signed_put)
        self.routes.add("GET", "/xml", lambda r: Reply.xml(400, s3_error_xml("Bad", "an XML no")))
        self.routes.add("POST", "/jobs", self._start_job)
        self.routes.add("GET", "/jobs/{job}", self._job)

    def handle(self, request: Request) -> Reply:
        return self.routes.dispatch(request)

    def error_body(self, status: int, message: str) -> Any:
        return default_error_body(status, message)

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        return {"jobs": self.jobs.snapshot()}

    def reset(self) -> None:
        self.jobs.reset()

    @staticmethod
    def _digest(request: Request) -> dict[str, Any]:
        with request.open_body() as body:
            md5 = hashlib.file_digest(body, "md5").hexdigest()
        return {"size": request.body_size(), "md5": md5, "on_disk": request.body_path is not None}

    def _echo(self, request: Request) -> Reply:
        return Reply(200, {
            "method": request.method, "params": dict(request.path_params),
            "query": dict(request.query), "authorization": request.header("authorization"),
            "content_type": request.header("content-type"), "body": self._digest(request)})

    def _upload(self, request: Request) -> Reply:
        body = self._digest(request)
        form = request.multipart(self.store.root / "incoming")
        files = {}
        for name, part in form.files.items():
            kept = self.store.keep_file(f"{name}.bin", part.path)
            with kept.open("rb") as file:
                md5 = hashlib.file_digest(file, "md5").hexdigest()
            files[name] = {"file_name": part.file_name, "content_type": part.content_type,
                           "size": part.size, "md5": md5}
        self.seen_bodies.append(body)
        return Reply(200, {"fields": dict(form.fields), "files": files, "body": body})

    def _sign(self, request: Request) -> Reply:
        seconds = float(request.query.get("seconds", "60"))
        path = f"{self.prefix}/signed/{request.path_params['name']}"
        query = self.signing.sign("PUT", path, seconds, {"content-type": "text/csv"})
        return Reply(200, {"path": path, "query": query})

    def _signed_put(self, request: Request) -> Reply:
        path = f"{self.prefix}/signed/{request.path_params['name']}"
        try:
            fields = self.signing.verify("PUT", path, request.query)
        except SignatureRefused as refused:
            return Reply.xml(403, s3_error_xml(refused.code, refused.message))
        if request.header("content-type") != fields["content-type"]:
            return Reply.xml(403, s3_error_xml("SignatureDoesNotMatch", "wrong Content-Type"))
        if request.header("authorization") or request.header("x-key"):
            raise ApiError(400, "a signed URL takes no other credential")
        size, md5 = request.save_body(self.store.file_path(request.path_params["name"]))
        return Reply.empty(200, {"ETag": f'"{md5}"', "X-Size": str(size)})

    def _start_job(self, request: Request) -> Reply:
        body = request.json_object()

        def work() -> dict[str, Any]:
            if body.get("fail"):
                raise JobFailed("the data did not parse")
            return {"echo": body.get("value")}

        return Reply(202, {"job": self.jobs.start("echo", work, float(body.get("delay", 0))).id})

    def _job(self, request: Request) -> Reply:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise ApiError(404, "no such job")
        return Reply(200, job.to_json())
