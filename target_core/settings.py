"""Settings every target shares, declared once so that they read the same in every `--about`.

The four targets speak one vocabulary ("learn one, know all four"): how they reach the API
(`api_url`, `request_timeout`, `max_retries`, `rate_limit_per_minute`) and what a stream's
rows do to its destination (`load_method`). A platform adds its own settings around these
and says, in `rate_limit_per_minute`'s description, what its own limit is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from singer_sdk import typing as th

from target_core.errors import ConfigError
from target_core.http import ApiSession, RateLimiter, check_url

LOAD_METHODS = ("append-only", "overwrite")


def load_method_setting(description: str) -> th.Property:
    """`load_method`: `append-only` (the default) or `overwrite`; what each does to the
    platform's destination is the platform's to say in `description`."""
    return th.Property("load_method", th.StringType, default="append-only",
                       allowed_values=list(LOAD_METHODS), description=description)


def connection_settings(*, rate_limit_default: int, rate_limit_note: str) -> list[th.Property]:
    """`rate_limit_per_minute`, `request_timeout` and `max_retries`, with their defaults."""
    return [
        th.Property("rate_limit_per_minute", th.IntegerType, default=rate_limit_default,
                    description=f"Most API calls in any 60 s ({rate_limit_note}). 0 turns "
                                "the client-side limit off."),
        th.Property("request_timeout", th.IntegerType, default=300,
                    description="Seconds to wait for one API answer."),
        th.Property("max_retries", th.IntegerType, default=8,
                    description="Retries of a call after 429, 5xx, a dropped connection or a "
                                "timeout (exponential backoff; Retry-After is honoured)."),
    ]


def check_connection_settings(config: Mapping[str, Any]) -> None:
    """`api_url` is https (or loopback http); timeouts positive; limits not negative."""
    check_url(config["api_url"], "api_url")
    if config["request_timeout"] < 1:
        raise ConfigError("request_timeout must be at least 1")
    if config["rate_limit_per_minute"] < 0 or config["max_retries"] < 0:
        raise ConfigError("rate_limit_per_minute and max_retries cannot be negative")


def api_session(config: Mapping[str, Any], *, platform: str, headers: Mapping[str, str],
                rate_limiter: RateLimiter | None = None) -> ApiSession:
    """An HTTP session as the connection settings say. Sessions of one target that call
    the same platform share one `rate_limiter` (the limit counts every call)."""
    return ApiSession(
        config["api_url"],
        platform=platform,
        headers=headers,
        timeout=config["request_timeout"],
        max_retries=config["max_retries"],
        rate_limiter=rate_limiter or RateLimiter(config["rate_limit_per_minute"]),
    )
