"""Keep secrets out of every log line, error message and test snapshot.

A target knows its secrets once its config is read: every setting marked `secret` in the
config schema. The `Redactor` replaces those values wherever they appear, and any bearer
token and any URL's query string (where signed URLs carry their signatures, e.g. in the
debug lines of urllib3); the logging filter
applies it to each record (message, arguments and traceback text) before any handler
formats it, so even a debug log of a request or an unexpected traceback stays clean.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable

MASK = "****"
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")
_URL_QUERY = re.compile(r"(/[^\s?'\"<>]*)\?[^\s'\"<>]+")


class Redactor:
    """Replaces known secret values (and any bearer token) in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            # Very short values would mask ordinary words; they are not real credentials.
            if isinstance(secret, str) and len(secret) >= 4 and secret not in self._secrets:
                self._secrets.append(secret)
        self._secrets.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_QUERY.sub(rf"\g<1>?{MASK}", text)
        return _BEARER.sub(rf"\g<1>{MASK}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a log record so that no handler ever sees a secret."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed %-format: keep the raw text
            message = str(record.msg)
        record.msg, record.args = self.redactor(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text, record.exc_info = self.redactor(text).rstrip("\n"), None
        elif record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True


REDACTOR = Redactor()
"""The process-wide redactor: every target adds its secrets here when it reads its config."""


def install_log_redaction(secrets: Iterable[str]) -> Redactor:
    """Remember these secrets and attach the filter to every handler that exists now."""
    REDACTOR.add(secrets)
    log_filter = RedactingFilter(REDACTOR)
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(log_filter)
    return REDACTOR
