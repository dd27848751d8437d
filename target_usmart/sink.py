"""How a stream becomes a file of a uSmart dataset: one CSV per stream per run.

The core's file path (`target_core/filesink.py`) spools the stream's rows into an
`IngestCsvWriter` file; at the end of the input this `FileLoad` sends it:

```
upload(file)    dataset:view                        the stream's file (overwrite), pipelines
                s3:generatePutRequest + signed PUT  (403: a new URL, see UsmartClient.upload)
                file:updateRevision | file:create   the file is registered in the dataset
commit(files)   resourceContainer:process           each output pipeline to refresh
```

The stream's records are acknowledged (and STATE may pass them) only when `commit`
returns: the revision is registered and every refresh was accepted. With `max_file_bytes`
(append-only), a long stream is cut into several files, each a new file of the dataset
registered and refreshed as soon as it is complete (`confirms_each_file`), so STATE moves
during the run instead of only at its end. A refresh that fails
stops the run before that STATE; the resumed run uploads again (a new revision of the same
file under `overwrite`). A stream with no records makes no call at all (the core opens no
file for it), and the load itself calls nothing until its file is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from target_core.errors import ApiError, ConfigError
from target_core.filesink import FileLoad, FinishedFile
from target_core.sink import Acknowledged
from target_usmart.client import PLATFORM, DatasetView, UsmartClient, safe_file_name
from target_usmart.ingest_csv import IngestCsvWriter

logger = logging.getLogger(__name__)

OVERWRITE = "overwrite"
ALL_PIPELINES = "all"


def csv_file_name(name: str) -> str:
    """A basename ending in `.csv`: folders, `..` and control characters never reach the
    platform (`fileName` is what its UI shows)."""
    base = safe_file_name(name)
    return base if base.lower().endswith(".csv") else f"{base}.csv"


def stamped(file_name: str, run_stamp: str, part: int | None = None) -> str:
    """`orders.csv` -> `orders-20240102T030405Z.csv` (or `...Z-2.csv`, a run's second
    part): append-only runs add new files."""
    path = PurePath(file_name)
    return f"{path.stem}-{run_stamp}{'' if part is None else f'-{part}'}{path.suffix}"


@dataclass(frozen=True)
class Destination:
    """Where one stream lands: a dataset, a file name in it, and how."""

    dataset: str
    file_name: str
    """The name of the stream's file in the dataset (overwrite: the file revised)."""
    load_method: str
    file_guid: str | None = None
    """The file to revise, named in `file_guid_map` (None: found by name)."""
    refresh: tuple[str, ...] | None = None
    """Output pipelines to refresh (None: all of the dataset's)."""


class Destinations:
    """The run's streams and their destinations: two streams may not overwrite one file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[tuple[str, str], str] = {}

    def claim(self, stream: str, destination: Destination) -> None:
        """Refuse a second stream mapped onto a file another stream overwrites."""
        if destination.load_method != OVERWRITE:
            return
        key = (destination.dataset, destination.file_guid or destination.file_name.lower())
        with self._lock:
            owner = self._owners.setdefault(key, stream)
        if owner != stream:
            raise ConfigError(
                f"streams '{owner}' and '{stream}' both overwrite the file "
                f"'{destination.file_name}' of dataset '{destination.dataset}': each would "
                "replace the other's rows; give them different names in file_name_map (or "
                "datasets in dataset_map)")


class UsmartLoad(FileLoad):
    """One stream's CSV for one run -> a file (or a new revision) of a uSmart dataset."""

    writer_class = IngestCsvWriter

    def __init__(self, stream: str, client: UsmartClient, destination: Destination,
                 run_stamp: str, acknowledged: Acknowledged | None = None,
                 max_file_bytes: int | None = None) -> None:
        """`acknowledged(stream, number, rows, seconds)` is told when rows are confirmed
        (the progress line every target writes). `max_file_bytes` (append-only only): a
        file is finished at that size and the next one started, each confirmed alone."""
        super().__init__(stream)
        if max_file_bytes is not None and destination.load_method == OVERWRITE:
            raise ConfigError("max_file_bytes is for append-only: overwrite replaces one file")
        self.max_file_bytes = max_file_bytes
        self.confirms_each_file = max_file_bytes is not None
        self.client = client
        self.destination = destination
        self.run_stamp = run_stamp
        self.acknowledged = acknowledged
        self.file_guid: str | None = None
        self.view: DatasetView | None = None
        self._started = 0.0

    # -- sender thread -----------------------------------------------------------------------

    def upload(self, file: FinishedFile) -> None:
        """dataset:view, the signed upload, then file:create or file:updateRevision."""
        where = self.destination
        self._started = time.monotonic()
        if self.view is None or where.load_method == OVERWRITE:  # append-only: pipelines only
            self.view = self.client.view_dataset(where.dataset)
        name = where.file_name if where.load_method == OVERWRITE else stamped(
            where.file_name, self.run_stamp, file.number if self.confirms_each_file else None)
        revise = self._file_to_revise(self.view) if where.load_method == OVERWRITE else None
        upload = self.client.upload(name, file.path)
        if revise is None:
            self.file_guid = self.client.create_file(where.dataset, upload, name, file.size)
            what = "new file"
        else:
            self.client.update_revision(revise, upload, name, file.size)
            self.file_guid, what = revise, "new revision of file"
        logger.info("Stream '%s': %d rows registered as %s '%s' (%s) in dataset '%s'",
                    self.stream, file.rows, what, name, self.file_guid, where.dataset)
        if self.confirms_each_file:
            self._refresh([file])

    def commit(self, files: Sequence[FinishedFile]) -> None:
        """The output pipelines refreshed after the stream's file (each file was, with
        `max_file_bytes`)."""
        if not self.confirms_each_file:
            self._refresh(files)

    def _refresh(self, files: Sequence[FinishedFile]) -> None:
        """resourceContainer:process for each output pipeline to refresh: the data API
        serves the new rows once this returns; then the rows count as loaded."""
        assert self.view is not None  # upload ran first
        for pipeline in self._pipelines(self.view):
            self.client.refresh_pipeline(pipeline)
            logger.info("Stream '%s': output pipeline '%s' of dataset '%s' refreshed",
                        self.stream, pipeline, self.destination.dataset)
        if self.acknowledged is not None:
            self.acknowledged(self.stream, files[-1].number, sum(f.rows for f in files),
                              time.monotonic() - self._started)

    # -- choices -----------------------------------------------------------------------------

    def _file_to_revise(self, view: DatasetView) -> str | None:
        """The GUID of the dataset's file this stream overwrites; None: create it."""
        where = self.destination
        if where.file_guid is not None:
            if not any(f.guid == where.file_guid for f in view.files):
                raise ApiError(f"stream '{self.stream}': dataset '{where.dataset}' has no file "
                               f"'{where.file_guid}' (file_guid_map)")
            return where.file_guid
        same = view.files_named(where.file_name)
        if len(same) > 1:
            raise ApiError(
                f"stream '{self.stream}': dataset '{where.dataset}' has {len(same)} files "
                f"named '{where.file_name}' ({', '.join(f.guid for f in same)}); name the one "
                "to revise in file_guid_map")
        return same[0].guid if same else None

    def _pipelines(self, view: DatasetView) -> tuple[str, ...]:
        """All the dataset's output pipelines, or those of `refresh_pipelines` it has (the
        list may name pipelines of several datasets)."""
        wanted = self.destination.refresh
        if wanted is None:
            return view.pipelines
        chosen = tuple(guid for guid in view.pipelines if guid in wanted)
        if wanted and not chosen:
            logger.warning("Stream '%s': no pipeline of refresh_pipelines belongs to dataset "
                           "'%s' (it has: %s): none refreshed", self.stream,
                           self.destination.dataset, ", ".join(view.pipelines) or "none")
        return chosen


__all__ = ["ALL_PIPELINES", "OVERWRITE", "PLATFORM", "Destination", "Destinations",
           "UsmartLoad", "csv_file_name", "stamped"]
