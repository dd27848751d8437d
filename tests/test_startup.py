"""singer-sdk's unused imports (joblib with numpy, universal-pathlib with fsspec) wait until
first use (target_core/startup.py): a target starts without them, and they still work when
some code does use them; pyarrow is imported without numpy. Each check runs in a fresh
interpreter, as a target does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from target_core.startup import defer_unused_imports

TARGETS = ["target_graphitenote", "target_datainsider", "target_usmart", "target_datatile"]


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("package", TARGETS)
def test_a_target_starts_without_joblib_and_fsspec(package: str) -> None:
    loaded = run_python(
        f"import sys, {package}.target\n"
        "print(*(name in sys.modules and type(sys.modules[name]).__name__ != '_StandIn'\n"
        "        for name in ('joblib', 'upath', 'fsspec', 'numpy')))")
    joblib, upath, fsspec, numpy = loaded.split()
    assert (joblib, upath, fsspec) == ("False", "False", "False")
    assert numpy == "False", "DataTile loads pyarrow, but without numpy"


def test_pyarrow_works_without_numpy_and_numpy_stays_importable() -> None:
    out = run_python(
        "import sys, target_datatile.target\n"
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "print('numpy' in sys.modules, pa.lib.np)\n"
        "from target_datainsider.sink import parquet_writer\n"
        "parquet_writer()\n"  # lake mode's Parquet: pyarrow is loaded, numpy still not
        "print('numpy' in sys.modules, 'pyarrow.parquet' in sys.modules)\n"
        "batch = pa.RecordBatch.from_pydict({'s': ['a', 'bcd', None], 'x': [1.5, None, 2.0]})\n"
        "print(pc.max(pc.binary_length(batch.column(0))).as_py(), batch.column(1).to_pylist())\n"
        "import numpy\n"
        "print(numpy.arange(3).tolist(), pa.lib.np)\n")
    assert out.splitlines() == ["False None", "False True", "3 [1.5, None, 2.0]",
                                "[0, 1, 2] None"]


def test_pyarrow_uses_numpy_when_it_is_loaded_first() -> None:
    out = run_python(
        "import numpy, target_datatile.target\n"
        "import pyarrow as pa\n"
        "print(pa.array(numpy.arange(3)).to_pylist(), pa.lib.np is numpy)\n")
    assert out == "[0, 1, 2] True"


def test_the_deferred_modules_work_when_used() -> None:
    out = run_python(
        "import sys, target_graphitenote.target\n"
        "from joblib import Parallel, delayed, parallel_config\n"  # as singer-sdk does
        "with parallel_config(backend='threading', n_jobs=2):\n"
        "    print(Parallel()(delayed(abs)(-i) for i in range(4)))\n"
        "import joblib\n"
        "print(type(joblib).__name__, sys.modules['joblib'] is joblib, joblib.__version__ > '')\n"
        "from singer_sdk.helpers._batch import UPath\n"
        "print(UPath(sys.prefix).exists(), type(sys.modules['upath']).__name__)\n")
    assert out.splitlines() == ["[0, 1, 2, 3]", "module True True", "True module"]


def test_nothing_changes_once_singer_sdk_is_loaded() -> None:
    import joblib  # this process loaded singer-sdk (conftest), and with it joblib

    before = dict(sys.modules)
    defer_unused_imports()
    assert sys.modules == before
    assert type(sys.modules["joblib"]) is type(joblib)
