"""Peak memory of a process tree, sampled in a thread (psutil), for the benchmark scripts."""

from __future__ import annotations

import threading
import time

import psutil

__all__ = ["PeakMemory"]


class PeakMemory:
    """Context manager: the peak summed RSS (bytes) of this process and all its children.

    ``baseline`` is the RSS when the context was entered; ``peak - baseline`` is what the
    work inside added.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self.baseline = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        """Summed RSS of this process and its descendants now."""
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # a process that just ended
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __enter__(self):
        self.baseline = self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())
        return False

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30
