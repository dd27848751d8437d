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
