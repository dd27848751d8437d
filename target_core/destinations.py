"""Destinations a target created, remembered between runs in a small JSON file.

A platform with no route to list what exists (Graphite Note has none for datasets) cannot
find the dataset an earlier run created by name. Without a memory, every run with
`create_missing_datasets` would create one more dataset of the same name. The file maps
a scope (the API URL and account, so two tenants never share an entry) and a destination
name to the platform's id:

    {"https://app.graphite-note.com/api user 3f9a": {"shop_users": "5d8c4668d34e"}}

It is read when a destination is needed and rewritten whole (write, then rename) each time
one is created, so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from target_core.errors import ConfigError


class DestinationRegistry:
    """Name -> id of the destinations created in one scope, kept in `path`."""

    def __init__(self, path: Path | str, scope: str) -> None:
        self.path = Path(path)
        self.scope = scope
        self._lock = threading.Lock()

    def get(self, name: str) -> str | None:
        """The id remembered for `name`, if an earlier run created it."""
        with self._lock:
            return self._read().get(self.scope, {}).get(name)

    def remember(self, name: str, destination_id: str) -> None:
        """Add `name` -> `destination_id` to the file (created when missing)."""
        with self._lock:
            known = self._read()
            known.setdefault(self.scope, {})[name] = destination_id
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
            os.replace(partial, self.path)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the created-destinations file {self.path}: "
                              f"{exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ConfigError(f"the created-destinations file {self.path} is not a JSON "
                              "object of objects")
        return data
