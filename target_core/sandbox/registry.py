"""Finds the installed emulators and gives each its own store under the data dir.

Emulators are discovered through the ``target_core.sandbox.emulators`` entry-point group, so
adding a platform is a line in ``pyproject.toml`` and ``target_core`` imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from target_core.sandbox.emulator import Emulator
from target_core.sandbox.store import Store

ENTRY_POINT_GROUP = "target_core.sandbox.emulators"


def discover_emulator_classes() -> list[type[Emulator]]:
    """Emulator classes declared by installed distributions, sorted by name."""
    classes = [point.load() for point in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted(classes, key=lambda cls: cls.name)


class EmulatorRegistry:
    """The emulators serving one data dir, and routing of a URL path to one of them."""

    def __init__(self, data_dir: Path | str, classes: Sequence[type[Emulator]] | None = None):
        self.data_dir = Path(data_dir)
        chosen = discover_emulator_classes() if classes is None else list(classes)
        self.emulators: dict[str, Emulator] = {}
        for cls in chosen:
            if cls.name in self.emulators:
                raise ValueError(f"two emulators are named {cls.name!r}")
            self.emulators[cls.name] = cls(Store(self.data_dir / cls.name))  # type: ignore[call-arg]
        # longest prefix first, so "/a/b" wins over "/a" for "/a/b/c"
        self._by_prefix = sorted(
            self.emulators.values(), key=lambda emulator: len(emulator.prefix), reverse=True
        )

    def match(self, path: str) -> tuple[Emulator, str] | None:
        """The emulator owning ``path`` and the path relative to its prefix."""
        for emulator in self._by_prefix:
            prefix = emulator.prefix.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return emulator, path[len(prefix) :] or "/"
        return None

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        return {name: emulator.snapshot(max_rows) for name, emulator in self.emulators.items()}

    def reset(self) -> None:
        for emulator in self.emulators.values():
            emulator.reset()
