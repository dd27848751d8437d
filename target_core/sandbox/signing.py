"""Signed URLs, like S3's pre-signed PUTs: the signature is the credential, and it expires.

`SignedUrls.sign` makes a query string binding a method, a path, an expiry time and any
fields (e.g. the Content-Type the upload must carry) with an HMAC of a per-sandbox secret.
`verify` gives the fields back, or raises `SignatureRefused` with S3's code for why
(``AccessDenied`` when expired, ``SignatureDoesNotMatch`` when altered): the emulator
renders it in its platform's shape (S3 answers 403 with an XML body). Query strings never
reach the request log, so signatures are not written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode


class SignatureRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignedUrls:
    def __init__(self, secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._clock = clock

    def sign(self, method: str, path: str, expires_in: float,
             fields: Mapping[str, str] | None = None) -> str:
        """The query string (without `?`) that authorises `method path` until expiry."""
        expires = str(int(self._clock() + expires_in))
        signed = {**(fields or {}), "expires": expires}
        return urlencode({**signed, "signature": self._mac(method, path, signed)})

    def verify(self, method: str, path: str, query: Mapping[str, str]) -> dict[str, str]:
        """The signed fields (expiry removed); raises `SignatureRefused`."""
        given = dict(query)
        signature = given.pop("signature", "")
        if not signature or "expires" not in given:
            raise SignatureRefused("AccessDenied", "Query-string authentication requires "
                                   "the signature and expires parameters")
        if not hmac.compare_digest(signature, self._mac(method, path, given)):
            raise SignatureRefused("SignatureDoesNotMatch", "The request signature we "
                                   "calculated does not match the signature you provided")
        try:
            expires = int(given.pop("expires"))
        except ValueError:
            raise SignatureRefused("AccessDenied", "Invalid expires parameter") from None
        if self._clock() > expires:
            raise SignatureRefused("AccessDenied", "Request has expired")
        return given

    def _mac(self, method: str, path: str, fields: Mapping[str, str]) -> str:
        text = "\n".join([method.upper(), path, *(f"{k}={fields[k]}" for k in sorted(fields))])
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()


def s3_error_xml(code: str, message: str) -> str:
    """S3's error document."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>")
