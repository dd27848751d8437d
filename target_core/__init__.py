"""What every target of this project shares, and no knowledge of any one platform.

- `reader`: Singer lines -> messages, fast, with line numbers for error messages.
- `validation`: a compiled validator per stream schema.
- `columns`: JSON Schema properties -> neutral column types; `conversions` turns values.
- `rows`: a generated function per stream that turns a record into a row in column order.
- `target` / `sink`: the singer-sdk Target and Sink every platform target builds on.
- `uploads` / `checkpoint`: batches go out on a second thread; STATE follows acknowledgement.
- `http`: one requests session with retries, Retry-After, a rate limit and redaction.
- `spool`: disk-backed batch files for platforms that take whole files.
- `sandbox`: the machinery of the API emulators that ship with the product.
"""

import os

# Arrow's default allocator (mimalloc) keeps freed pages. Unless the environment says
# otherwise, every pyarrow user here (the spool, Parquet, SPSS) gets the system allocator:
# the variable is read when pyarrow loads, and `pa.set_memory_pool` does not reach the
# Parquet writer's C++ allocations. Peak RSS of 200k-record runs in bench/run.py, same
# speed: lake mode 146 MB with mimalloc, 127 MB without; DataTile 150 MB and 117 MB.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
