"""The Graphite Note dataset API, one method per route (see docs/graphitenote.md).

Routes (base `https://app.graphite-note.com/api`, `Authorization: Bearer <tenant token>`,
JSON keys with hyphens): `dataset-create`, `dataset-fill`, `dataset-complete`. There is no
route to list, read or delete datasets. Answers are turned into errors a user can act on.
"""

from __future__ import annotations

from typing import Any

import orjson

from target_core.errors import ApiError, PayloadTooLarge
from target_core.http import ApiSession, HttpStatusError

PLATFORM = "Graphite Note"


class GraphiteNoteClient:
    """Calls the Graphite Note API as one tenant user."""

    def __init__(self, session: ApiSession, user_code: str) -> None:
        self.session = session
        self.user_code = user_code

    def create_dataset(self, name: str, columns: list[dict[str, Any]]) -> str:
        """A new dataset with these columns; returns its dataset code."""
        answer = self._post("dataset-create", {"name": name, "columns": columns})
        code = (answer.get("data") or {}).get("dataset-code")
        if not isinstance(code, str) or not code:
            raise ApiError(f"{PLATFORM} created dataset '{name}' but returned no dataset-code")
        return code

    def fill(
        self,
        dataset_code: str,
        columns: list[dict[str, Any]],
        insert_data: str,
        *,
        compressed: bool,
        append: bool,
    ) -> int | None:
        """Insert rows (`insert-data` as prepared by the caller); returns the rows-count."""
        answer = self._post("dataset-fill", {
            "dataset-code": dataset_code,
            "columns": columns,
            "insert-data": insert_data,
            "compressed": compressed,
            "append": append,
        }, dataset_code)
        return _rows_count(answer)

    def complete(self, dataset_code: str) -> int | None:
        """Tell Graphite Note the load is done (it computes the dataset's final shape)."""
        return _rows_count(self._post("dataset-complete", {"dataset-code": dataset_code},
                                      dataset_code))

    def _post(self, route: str, body: dict[str, Any], dataset_code: str | None = None) -> dict:
        payload = orjson.dumps({"user-code": self.user_code, **body})
        try:
            response = self.session.post(route, payload)
        except HttpStatusError as exc:
            raise self._explain(exc, dataset_code) from None
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ApiError(f"{PLATFORM} answered {route} with a body that is not JSON",
                           response.status_code) from None
        return answer if isinstance(answer, dict) else {}

    def _explain(self, exc: HttpStatusError, dataset_code: str | None) -> ApiError:
        status, route = exc.status, exc.route
        dataset = f"dataset '{dataset_code}'" if dataset_code else "the dataset"
        messages = {
            400: f"{PLATFORM} rejected {route} as malformed (HTTP 400): {exc.detail}",
            401: f"{PLATFORM} refused the API token (HTTP 401 on {route}): check api_token",
            403: f"{PLATFORM} denied {route} for user_code '{self.user_code}' (HTTP 403): check "
                 "user_code and that this user may write the dataset",
            404: f"{PLATFORM} has no {dataset} (HTTP 404 on {route}): check dataset_code / "
                 "dataset_map, or set create_missing_datasets: true",
            409: f"{PLATFORM} reported a conflicting change to {dataset} (HTTP 409 on {route}): "
                 "is another load writing to it at the same time?",
            429: f"{PLATFORM} kept refusing calls for the rate limit (HTTP 429 on {route}): "
                 "lower rate_limit_per_minute or raise max_retries",
            441: f"{PLATFORM} refused {route}: the plan's limit is reached (HTTP 441)",
            443: f"{PLATFORM} refused {route}: the trial is over (HTTP 443)",
        }
        if status == 413:
            return PayloadTooLarge(f"{PLATFORM} refused the batch as too large (HTTP 413)", 413)
        default = f"{PLATFORM} failed on {route} (HTTP {status}): {exc.detail}"
        return ApiError(messages.get(status, default), status)


def _rows_count(answer: dict) -> int | None:
    details = (answer.get("data") or {}).get("details") or {}
    count = details.get("rows-count")
    return count if isinstance(count, int) else None
