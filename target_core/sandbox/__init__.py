"""Loopback emulators of the platforms' APIs, served by one generic server.

``target_core.sandbox`` holds no platform knowledge: emulators (``target_<platform>/sandbox.py``)
are found through the ``target_core.sandbox.emulators`` entry-point group. See ``server.py``
for the request pipeline and ``control.py`` for the ``/_sandbox/*`` endpoints.

The kit an emulator is built from: `Routes` (with ``{name}`` path parameters), `Request`
(JSON bodies, bodies streamed to disk, multipart parsing, credentials from any header,
query parameter or JSON field), `Reply` (JSON, raw bytes such as XML errors, or empty, with
headers such as ETag), `Store` (metadata, row files, uploaded files), `Jobs` (background
work to poll), `SignedUrls` (expiring pre-signed URLs, S3-style errors) and `BusyKeys`.
"""

from target_core.sandbox.emulator import (
    ApiError,
    BusyKeys,
    Emulator,
    Multipart,
    Reply,
    Request,
    Routes,
    UploadedFile,
    default_error_body,
)
from target_core.sandbox.faults import FaultPlan, FaultRule
from target_core.sandbox.jobs import Job, JobFailed, Jobs
from target_core.sandbox.limits import Limits, SlidingWindowLimiter
from target_core.sandbox.registry import EmulatorRegistry, discover_emulator_classes
from target_core.sandbox.requestlog import RequestLog
from target_core.sandbox.server import SandboxServer, served_elsewhere
from target_core.sandbox.signing import SignatureRefused, SignedUrls, s3_error_xml
from target_core.sandbox.store import Store

__all__ = [
    "ApiError",
    "BusyKeys",
    "Emulator",
    "EmulatorRegistry",
    "FaultPlan",
    "FaultRule",
    "Job",
    "JobFailed",
    "Jobs",
    "Limits",
    "Multipart",
    "Reply",
    "Request",
    "RequestLog",
    "Routes",
    "SandboxServer",
    "SignatureRefused",
    "SignedUrls",
    "SlidingWindowLimiter",
    "Store",
    "UploadedFile",
    "default_error_body",
    "discover_emulator_classes",
    "s3_error_xml",
    "served_elsewhere",
]
