"""The singer-sdk Target of the whole-file platforms (DataTile, uSmart, DataInsider's lake).

It wires the file path together (see `filesink.py`): one `StreamFiles` registry with its
spool directory, `FileSink`s handed the checkpoint, the uploader and that registry, and at
the end of the input the last file, upload and commit of every stream that got records.
A platform's target subclasses `FileTarget` and implements `open_load(stream)`.

Signals: a SIGTERM or SIGINT stops the reading (as in `CoreTarget`), and then no file is
finished: the spool is removed, nothing is uploaded, committed or synced from the
interrupted input, no STATE goes past files already confirmed, and the exit code is
128 + the signal number, so an orchestrator does not take the run for a complete load.
The spool directory is removed whatever the end: success, failure or signal (only a
SIGKILL leaves it, in the system's temporary directory or `spool_root`).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from target_core.errors import Interrupted
from target_core.filesink import FileLoad, FileSink, FileSinkParts, StreamFiles
from target_core.target import CoreTarget


class FileTarget(CoreTarget):
    """Base of the targets that upload each stream as files."""

    default_sink_class = FileSink

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = StreamFiles(self.checkpoint, self.open_load, self.spool_root())

    # -- what a platform provides --------------------------------------------------------

    def open_load(self, stream: str) -> FileLoad:
        """The platform's `FileLoad` for a stream (raise `ConfigError` if it has no place)."""
        raise NotImplementedError(f"{type(self).__name__} must implement open_load")

    def spool_root(self) -> Path | None:
        """Where the run's spool directory is made (None: the system's temporary dir)."""
        return None

    # -- wiring --------------------------------------------------------------------------

    def sink_parts(self, stream: str) -> FileSinkParts:
        return FileSinkParts(self.checkpoint, self.uploader, self.files)

    def drain_all(self, *, is_endofpipe: bool = False) -> None:  # type: ignore[misc]
        if is_endofpipe and self.interrupted_by is not None:
            # Buffered rows are not written and queued files not sent: a call in flight
            # may end (its confirmation is real), then only STATE already safe goes out.
            self.logger.warning("Signal %d: the input was cut, so no file is finished, "
                                "uploaded or committed from it; STATE stays at the last "
                                "confirmed file", self.interrupted_by)
            self.uploader.abort()
            self.uploader.raise_failure()  # an upload error that came first still wins
            self.checkpoint.flush()  # an overwrite run (hold_until_end) writes none
            raise Interrupted(self.interrupted_by)
        super().drain_all(is_endofpipe=is_endofpipe)

    def finish_streams(self) -> None:
        """End of input: each stream's last file, its upload and commit, in order."""
        self.files.finish(self.uploader)
        self.uploader.wait()

    def listen(self, file_input: IO[str] | None = None) -> None:
        try:
            super().listen(file_input)
        except BaseException:
            self.uploader.abort()  # queued files are dropped unsent: they were partial
            raise
        finally:
            self.files.discard()
