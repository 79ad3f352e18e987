"""Expiry of what the service keeps: results of ``/process``, uploads and cached previews.

With an age limit (``mosaic serve --max-age-hours H``), files older than it (by modification
time; a cached preview or statistic is touched each time it is served) are deleted from the
service's ``results/`` and ``cache/`` folders and from ``uploads/`` under the data directory,
when the service starts and then periodically; emptied sub-folders go too. The images under the
data directory that the service did not write, run records and the store are never expired.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["Expirer", "expire"]

log = logging.getLogger(__name__)


def expire(folders, max_age_s: float, *, now: float | None = None) -> list[Path]:
    """Delete the files under ``folders`` not modified for ``max_age_s`` seconds; returns them.

    Symlinks are deleted as links (never followed); sub-folders left empty are removed.
    """
    if not max_age_s > 0:
        raise ValueError(f"max_age_s must be > 0; got {max_age_s!r}")
    limit = (time.time() if now is None else now) - max_age_s
    gone = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
            for f in filenames:
                p = Path(dirpath) / f
                try:
                    if p.lstat().st_mtime < limit:
                        p.unlink()
                        gone.append(p)
                except FileNotFoundError:
                    continue  # deleted meanwhile
            for d in dirnames:
                try:
                    (Path(dirpath) / d).rmdir()  # only when empty
                except OSError:
                    pass
    if gone:
        log.info("expired %d files older than %.4g h", len(gone), max_age_s / 3600)
    return gone


class Expirer:
    """``expire`` on ``folders`` now and then every ``interval_s`` seconds in a daemon thread."""

    def __init__(self, folders, max_age_s: float, *, interval_s: float | None = None):
        self.folders = [Path(f) for f in folders]
        self.max_age_s = float(max_age_s)
        self.interval_s = interval_s if interval_s is not None else min(max(self.max_age_s / 4, 1.0), 600.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mosaic-expiry", daemon=True)

    def sweep(self) -> list[Path]:
        """Expire now."""
        return expire(self.folders, self.max_age_s)

    def start(self) -> Expirer:
        self.sweep()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # never let the sweeper die silently
                log.exception("expiry sweep failed")
