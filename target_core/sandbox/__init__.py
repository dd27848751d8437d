"""Loopback emulators of the platforms' APIs, served by one generic server.

``target_core.sandbox`` holds no platform knowledge: emulators (``target_<platform>/sandbox.py``)
are found through the ``target_core.sandbox.emulators`` entry-point group. See ``server.py``
for the request pipeline and ``control.py`` for the ``/_sandbox/*`` endpoints.
"""

from target_core.sandbox.emulator import (
    ApiError,
    BusyKeys,
    Emulator,
    Reply,
    Request,
    Routes,
    default_error_body,
)
from target_core.sandbox.faults import FaultPlan, FaultRule
from target_core.sandbox.limits import Limits, SlidingWindowLimiter
from target_core.sandbox.registry import EmulatorRegistry, discover_emulator_classes
from target_core.sandbox.requestlog import RequestLog
from target_core.sandbox.server import SandboxServer
from target_core.sandbox.store import Store

__all__ = [
    "ApiError",
    "BusyKeys",
    "Emulator",
    "EmulatorRegistry",
    "FaultPlan",
    "FaultRule",
    "Limits",
    "Reply",
    "Request",
    "RequestLog",
    "Routes",
    "SandboxServer",
    "SlidingWindowLimiter",
    "Store",
    "default_error_body",
    "discover_emulator_classes",
]
