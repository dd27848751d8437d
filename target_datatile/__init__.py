"""target-datatile: each Singer stream becomes one SPSS file, uploaded to DataTile's Data
Collector API (create / reload / append), then the processing job is polled to its end.

- `variables`: DataTile's rules for SPSS variables (names, labels, types, values).
- `spss`: the row count and string widths measured while spooling; the .sav/.zsav writer.
- `zsav`: a .zsav in flat memory: ReadStat's bytecode .sav, its data in zlib blocks.
- `client`: the Data Collector API, one method per route.
- `sandbox`: the emulator served by `target-sandbox` under `/datatile/api/v2`.
"""

from target_core.startup import defer_unused_imports, import_pyarrow

defer_unused_imports()  # before singer-sdk loads (target_core/startup.py)
import_pyarrow()  # before readstat-arrow loads it, with numpy
