"""Putting a finished file in place of an older one, without waiting for the older one's blocks.

Products are written under a temporary name and renamed when whole (:func:`os.replace`, atomic:
a reader sees the old file or the new one). When the final name already holds a file (a run
with ``--overwrite``), the rename also frees the old file's blocks, in the calling thread: for a
mosaic of a few hundred MB whose pages are still being written back, 0.1-0.2 s during which no
worker of the run has a task (the client commits the files between two passes). Here the old file
keeps a second name (a hard link) while the new one is renamed into place, so the rename frees
nothing, and that name is unlinked in a thread; :func:`wait_for_removals` joins those threads
(and the interpreter joins them at exit: they are not daemons, so no name is left behind).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

__all__ = ["replace_file", "wait_for_removals"]

log = logging.getLogger(__name__)

_removals: list[threading.Thread] = []
_lock = threading.Lock()


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:  # the new file is in place; an old name left behind is only disk
        log.warning("could not remove %s (the file it replaced): %s", path, err)


def replace_file(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Rename the complete file ``tmp`` to ``final`` (atomically), removing a file that ``final``
    held in a background thread. Returns ``final``."""
    tmp, final = Path(tmp), Path(final)
    aside = None
    if final.is_file() and not final.is_symlink():
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.link(final, aside)
        except OSError:  # no hard links here (some network and FAT file systems): replace in place
            aside = None
    try:
        os.replace(tmp, final)
    except BaseException:
        if aside is not None:
            aside.unlink(missing_ok=True)
        raise
    if aside is not None:
        thread = threading.Thread(target=_unlink, args=(aside,), name="mosaic-unlink")
        with _lock:
            _removals[:] = [t for t in _removals if t.is_alive()]
            _removals.append(thread)
        thread.start()
    return final


def wait_for_removals() -> None:
    """Wait until the files replaced so far are removed."""
    with _lock:
        threads = list(_removals)
    for t in threads:
        t.join()
