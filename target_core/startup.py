"""Start-up work a target does not need: modules loaded when first used, or not at all.

Two of singer-sdk's imports are loaded when first used rather than when a target starts
(`defer_unused_imports`), and pyarrow is imported without numpy (`import_pyarrow`).

When it loads, singer-sdk imports joblib (which imports numpy) for parallel drains, and
universal-pathlib (which imports fsspec) for the file URLs of BATCH messages. That is about
0.1 s of every run's start (measured on a one-record run: 0.35 s -> 0.25 s wall), spent on
code our targets do not reach: they drain in order (`max_parallelism = 1`, the uploader's
threads do the parallel part) and refuse BATCH messages. Until one of those modules is really
used, it is a stand-in: the names singer-sdk imports from it call the real module, and any
other attribute imports it, so nothing breaks if some code does use them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

DEFERRED = {"joblib": ("Parallel", "delayed", "parallel_config"), "upath": ("UPath",)}
"""Module -> the names singer-sdk imports from it (`target_base`, `helpers/_batch`)."""


class _StandIn(types.ModuleType):
    """A module not imported yet: its real self is imported on first use."""

    def real(self) -> types.ModuleType:
        loaded = sys.modules.get(self.__name__)
        if loaded is None or loaded is self:
            sys.modules.pop(self.__name__, None)
            loaded = importlib.import_module(self.__name__)
        return loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _forwarding(module: _StandIn, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(module.real(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def defer_unused_imports() -> None:
    """Put the stand-ins in place; does nothing once singer-sdk is loaded (too late then,
    e.g. in a test process), or for a module imported already."""
    if "singer_sdk" in sys.modules:
        return
    for name, names in DEFERRED.items():
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:  # not installed: let singer-sdk's own import say so
            continue
        stand_in = _StandIn(name)
        stand_in.__spec__ = spec
        if spec.submodule_search_locations is not None:  # a package: what `from x import y`
            stand_in.__path__ = list(spec.submodule_search_locations)  # looks up first
        for attribute in names:
            setattr(stand_in, attribute, _forwarding(stand_in, attribute))
        sys.modules[name] = stand_in


def import_pyarrow() -> None:
    """Import pyarrow and its compute functions with numpy hidden from them, unless either
    is loaded already (a test process, a stream map's code): then nothing changes.

    pyarrow imports numpy whenever it is installed (here it is, for the emulators'
    pyreadstat), for conversions from and to numpy arrays. The targets never hand numpy
    objects to pyarrow, and pyarrow runs without numpy (its own ``np is None`` paths). That
    import is 0.06 s of target-datatile's 0.4 s start and about 12 MB. numpy stays
    importable for any other code; only pyarrow goes on as if it were absent."""
    if "pyarrow" in sys.modules or "numpy" in sys.modules:
        return
    sys.modules["numpy"] = None  # type: ignore[assignment]  # import numpy: ImportError
    try:
        importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.compute")  # _compute tries numpy on its own
    finally:
        del sys.modules["numpy"]
