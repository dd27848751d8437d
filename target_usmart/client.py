"""uSmart's programmatic access, one method per action (see docs/usmart.md).

Every action is `POST <api_url>/org/<org GUID>/<action>` with a JSON body and the headers
`api-key-id` / `api-key-secret`. A file reaches a dataset in three steps: ask for a signed
S3 URL (`s3:generatePutRequest`), PUT the bytes there (no uSmart headers: S3 is another
party), then register them (`file:create` or `file:updateRevision`) by their `reference`.
Output pipelines (resource containers) serve the data; `resourceContainer:process` refreshes
one after a file changed. The read API (`urql`) serves what a pipeline holds.

What the contract leaves open ([?] / [I]: the shape of `dataset:view`, the fields of
`file:create`, the answers' wrapper) is gathered in `ContractShape`, so each assumption is
one documented, overridable value instead of a literal spread through the code.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from target_core.errors import ApiError
from target_core.http import ApiSession, HttpStatusError
from target_core.redaction import REDACTOR

PLATFORM = "uSmart"
DEFAULT_API_URL = "https://data.usmart.io"
DEFAULT_READ_URL = "https://api.usmart.io"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContractShape:
    """Where the assumed parts of uSmart's answers and bodies live (dotted paths).

    Defaults follow the one confirmed answer (`s3:generatePutRequest` wraps its fields in
    `result`) and the one confirmed body (`file:updateRevision`'s camel-case GUID names)."""

    view_files: str = "result.files"
    view_pipelines: str = "result.resourceContainers"
    file_guid: str = "fileGUID"
    file_name: str = "fileName"
    pipeline_guid: str = "resourceContainerGUID"
    create_fields: Mapping[str, str] = field(default_factory=lambda: {
        "dataset": "datasetGUID", "reference": "reference", "file_name": "fileName",
        "file_size": "fileSize"})
    created_file_guid: str = "result.fileGUID"


@dataclass(frozen=True)
class DatasetFile:
    guid: str
    name: str


@dataclass(frozen=True)
class DatasetView:
    """What `dataset:view` says about a dataset that the target needs."""

    guid: str
    files: tuple[DatasetFile, ...]
    pipelines: tuple[str, ...]
    """Resource container GUIDs of the dataset's output pipelines."""

    def files_named(self, name: str) -> list[DatasetFile]:
        return [file for file in self.files if file.name == name]


@dataclass(frozen=True)
class SignedUpload:
    """An answer of `s3:generatePutRequest`. The URL is a credential: never shown."""

    url: str = field(repr=False)
    content_type: str
    reference: str


def safe_file_name(name: str) -> str:
    """A basename the uSmart UI can show: no folder, no `..`, no control characters.

    `fileName` is shown as sent, so a path would expose the machine's folders."""
    base = re.split(r"[\\/]+", name.strip())[-1]
    base = re.sub(r"[\x00-\x1f\x7f]+", "_", base).strip(" .")
    return base or "stream"


class UsmartClient:
    """Calls uSmart as one API key of one organisation."""

    def __init__(
        self,
        session: ApiSession,
        org_guid: str,
        *,
        shape: ContractShape | None = None,
        read_url: str | None = None,
        url_attempts: int = 3,
    ) -> None:
        """`read_url`: the read API's base (default: `api_url` itself, or api.usmart.io
        when `api_url` is data.usmart.io). `url_attempts`: signed URLs requested per upload
        when S3 refuses one (403: expired or not accepted)."""
        self.session = session
        self.org = org_guid
        self.shape = shape or ContractShape()
        base = session.base_url
        read_url = read_url or (DEFAULT_READ_URL if base == DEFAULT_API_URL else base)
        self.read_session = session if read_url.rstrip("/") == base else ApiSession(
            read_url, platform=PLATFORM, headers=dict(session.session.headers),
            timeout=session.timeout, max_retries=session.max_retries,
            rate_limiter=session.rate_limiter)
        self.url_attempts = max(1, url_attempts)

    # -- actions -------------------------------------------------------------------------------

    def view_dataset(self, dataset_guid: str) -> DatasetView:
        """`dataset:view`: the dataset's files and output pipelines."""
        answer = self._action("dataset:view", {"datasetGUID": dataset_guid},
                              subject=f"dataset '{dataset_guid}'")
        shape = self.shape
        files = []
        for item in _list_at(answer, shape.view_files, "dataset:view"):
            guid, name = item.get(shape.file_guid), item.get(shape.file_name)
            if isinstance(guid, str) and isinstance(name, str):
                files.append(DatasetFile(guid, name))
        pipelines = tuple(
            item[shape.pipeline_guid] for item in _list_at(answer, shape.view_pipelines,
                                                            "dataset:view")
            if isinstance(item.get(shape.pipeline_guid), str))
        return DatasetView(dataset_guid, tuple(files), pipelines)

    def request_upload(self, file_name: str) -> SignedUpload:
        """`s3:generatePutRequest`: where to PUT a file of this name, and as what."""
        answer = self._action("s3:generatePutRequest", {"fileName": _basename(file_name)})
        result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        url, kind, reference = (result.get(k) for k in ("signedRequest", "contentType",
                                                         "reference"))
        if not all(isinstance(v, str) and v for v in (url, kind, reference)):
            raise ApiError(f"{PLATFORM} answered s3:generatePutRequest without signedRequest, "
                           "contentType and reference")
        _hide_signature(url)  # type: ignore[arg-type]
        return SignedUpload(url, kind, reference)  # type: ignore[arg-type]

    def put_file(self, upload: SignedUpload, path: Path) -> None:
        """The signed PUT (`ApiSession.put_file`): the file streamed from disk with the
        signed Content-Type and no uSmart key headers; 429, 5xx and dropped connections are
        retried by the session. Raises `HttpStatusError` (S3's code and message, never the
        URL's query) when S3 refuses."""
        try:
            self.session.put_file(upload.url, path, upload.content_type)
        except HttpStatusError as exc:
            raise HttpStatusError(exc.status, exc.route, _s3_problem(exc.detail)) from None

    def upload(self, file_name: str, path: Path) -> SignedUpload:
        """`s3:generatePutRequest`, then the PUT; a URL S3 refuses (403: expired or not
        accepted) is requested again, up to `url_attempts` URLs."""
        problem = ""
        for attempt in range(1, self.url_attempts + 1):
            upload = self.request_upload(file_name)
            try:
                self.put_file(upload, path)
                return upload
            except HttpStatusError as exc:
                if exc.status != 403:
                    raise ApiError(f"{PLATFORM}'s storage refused the upload of '{file_name}' "
                                   f"(HTTP {exc.status}: {exc.detail})", exc.status) from None
                problem = f"HTTP {exc.status} ({exc.detail})"
            if attempt < self.url_attempts:
                logger.warning("Upload of '%s' refused: %s; asking for a new signed URL "
                               "(%d of %d)", file_name, problem, attempt + 1, self.url_attempts)
        raise ApiError(f"{PLATFORM}'s storage refused the upload of '{file_name}' with "
                       f"{self.url_attempts} signed URLs: {problem}")

    def create_file(self, dataset_guid: str, upload: SignedUpload, file_name: str,
                    file_size: int) -> str:
        """`file:create`: the uploaded file becomes a new file of the dataset; its GUID."""
        names = self.shape.create_fields
        body = {names["dataset"]: dataset_guid, names["reference"]: upload.reference,
                names["file_name"]: _basename(file_name), names["file_size"]: file_size,
                "action": "file:create"}
        # not repeated after a 5xx or a dropped answer: a second create makes a second file
        answer = self._action("file:create", body, subject=f"dataset '{dataset_guid}'",
                              idempotent=False)
        guid = _at(answer, self.shape.created_file_guid)
        if not isinstance(guid, str) or not guid:
            raise ApiError(f"{PLATFORM} created '{file_name}' but returned no file GUID at "
                           f"{self.shape.created_file_guid}")
        return guid

    def update_revision(self, file_guid: str, upload: SignedUpload, file_name: str,
                        file_size: int) -> None:
        """`file:updateRevision`: the uploaded file becomes the file's new revision.
        Repeated after a lost answer: at worst one more revision with the same content."""
        self._action("file:updateRevision", {
            "reference": upload.reference, "fileName": _basename(file_name),
            "fileGUID": file_guid, "fileSize": file_size, "action": "file:updateRevision",
        }, subject=f"file '{file_guid}'")

    def refresh_pipeline(self, container_guid: str) -> None:
        """`resourceContainer:process`: the output pipeline picks up the changed files."""
        self._action("resourceContainer:process", {"resourceContainerGUID": container_guid},
                     subject=f"output pipeline '{container_guid}'")

    def read_rows(self, resource_guid: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """The read API: `limit` rows from `offset` of what a pipeline serves. Numbers keep
        their digits (`Decimal`)."""
        route = f"org/{self.org}/{resource_guid}/latest/urql"
        try:  # `limit(n,offset)` is a query parameter without a value: part of the route
            response = self.read_session.get(f"{route}?limit({int(limit)},{int(offset)})")
        except HttpStatusError as exc:
            raise self._explain(exc, f"resource '{resource_guid}'") from None
        rows = json.loads(response.content, parse_float=Decimal)
        if not isinstance(rows, list):
            raise ApiError(f"{PLATFORM} answered {route} with something other than a list")
        return rows

    # -- plumbing ------------------------------------------------------------------------------

    def _action(self, action: str, body: dict[str, Any], subject: str = "", *,
                idempotent: bool = True) -> dict[str, Any]:
        route = f"org/{self.org}/{action}"
        try:
            response = self.session.post(route, orjson.dumps(body), idempotent=idempotent)
        except HttpStatusError as exc:
            raise self._explain(exc, subject) from None
        try:
            answer = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            raise ApiError(f"{PLATFORM} answered {action} with a body that is not JSON",
                           response.status_code) from None
        return answer if isinstance(answer, dict) else {}

    def _explain(self, exc: HttpStatusError, subject: str) -> ApiError:
        status, action = exc.status, exc.route.split("?")[0].rsplit("/", 1)[-1]
        messages = {
            400: f"{PLATFORM} rejected {action} (HTTP 400): {exc.detail}",
            401: f"{PLATFORM} refused the API key (HTTP 401 on {action}): check api_key_id "
                 "and api_key_secret",
            403: f"{PLATFORM} denied {action} in organisation '{self.org}' (HTTP 403): check "
                 "org_guid, and that the key's user has the Provider role",
            404: f"{PLATFORM} has no {subject or 'such resource'} (HTTP 404 on {action}): "
                 "check dataset_guid / dataset_map",
            429: f"{PLATFORM} kept refusing calls for the rate limit (HTTP 429 on {action}): "
                 "lower rate_limit_per_minute or raise max_retries",
        }
        default = f"{PLATFORM} failed on {action} (HTTP {status}): {exc.detail}"
        return ApiError(messages.get(status, default), status)


def _basename(name: str) -> str:
    if safe_file_name(name) != name:
        raise ValueError(f"fileName must be a plain file name, got {name!r}")
    return name


def _at(answer: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(answer, dict):
            return None
        answer = answer.get(key)
    return answer


def _list_at(answer: dict[str, Any], path: str, action: str) -> list[dict[str, Any]]:
    found = _at(answer, path)
    if found is None:
        return []
    if not isinstance(found, list):
        raise ApiError(f"{PLATFORM} answered {action} with {path} that is not a list "
                       "(see the response-shape settings in docs/usmart.md)")
    return [item for item in found if isinstance(item, dict)]


def _hide_signature(url: str) -> None:
    """A signed URL is a credential until it expires: keep it out of every log line."""
    query = urlsplit(url).query
    REDACTOR.add([query, *(value for key, value in parse_qsl(query)
                           if "signature" in key.lower() or "credential" in key.lower())])


def _s3_problem(detail: str) -> str:
    """S3's error code and message from its XML; never the rest (it may quote the
    signature or the string it signed)."""
    found = dict(re.findall(r"<(Code|Message)>([^<]{0,200})</\1>", detail))
    if not found:
        return "no details" if detail.lstrip().startswith("<") else detail
    return ": ".join(part for part in (found.get("Code"), found.get("Message")) if part)
