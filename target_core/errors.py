"""Errors a user can act on, each printed as one line with no traceback.

Every error the targets raise on purpose derives from `TargetError`; the CLI entry point
prints `<target name>: error: <message>` and exits 1. Messages name the stream, input line
and field, and never the values (records carry personal data; configs carry secrets).
"""

from __future__ import annotations


class TargetError(Exception):
    """A failure the user can fix: bad config, bad input, a refusal by the platform."""


class ConfigError(TargetError):
    """The configuration is missing something or contradicts itself."""


class InputError(TargetError):
    """A Singer input line the target cannot accept (not JSON, out of order, invalid)."""


class ApiError(TargetError):
    """The platform answered with an error that retrying will not fix."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLarge(ApiError):
    """HTTP 413: the caller should split the batch and send the halves."""


class Interrupted(Exception):
    """A signal cut the input: the run ends with exit code 128 + the signal number.

    Not a `TargetError`: nothing is wrong with the config or the data, and the run must
    not look finished to an orchestrator (exit 0) either."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum
