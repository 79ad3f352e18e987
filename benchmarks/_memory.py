"""Peak memory of a process tree, sampled in a thread (psutil), for the benchmark scripts."""

from __future__ import annotations

import threading
import time

import psutil

__all__ = ["PeakMemory"]


class PeakMemory:
    """Context manager: the peak summed RSS (bytes) of this process and all its children."""

    def __init__(self, interval: float = 0.05, pid: int | None = None):
        self.interval = interval
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        return False

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30
