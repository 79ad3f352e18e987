"""Peak memory of a process tree, sampled in a thread (psutil), for the benchmark scripts."""

from __future__ import annotations

import os
import threading
import time

import psutil

__all__ = ["PeakMemory"]


class PeakMemory:
    """Context manager: the peak summed RSS (bytes) of this process (or ``root``) and all its children.

    ``baseline`` is the RSS when the context was entered; ``peak - baseline`` is what the
    work inside added. Each sample reads the RSS of the processes known; the process tree
    itself is walked again at most every ``refresh`` seconds (a walk reads every process's
    ``/proc`` entry: at 50 samples a second it took 15 % of a core from the runs it measured),
    so a child that lives less than that may be missed. ``by_process`` holds each process's own peak RSS (bytes) by pid, this
    process (the client, and a LocalCluster's scheduler) under ``os.getpid()``. :meth:`mark`
    ends a phase: it returns the phase's peak and starts the next one.
    """

    def __init__(self, interval: float = 0.02, refresh: float = 0.5, root: psutil.Process | None = None):
        self.root = root
        self.interval = interval
        self.refresh = refresh
        self._procs: list = []
        self._walked = -float("inf")
        self.peak = 0
        self.phase_peak = 0
        self.baseline = 0
        self.by_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        """Summed RSS of this process and its descendants now."""
        return PeakMemory._rss({})

    @staticmethod
    def _tree(root: psutil.Process | None = None) -> list:
        me = root or psutil.Process()
        try:
            return [me, *me.children(recursive=True)]
        except psutil.Error:  # a root that has ended
            return []

    def _sample(self) -> int:
        """:meth:`_rss` of the processes known, walking the tree again when it is due."""
        now = time.monotonic()
        if now - self._walked >= self.refresh:
            self._procs, self._walked = self._tree(self.root), now
        return self._rss(self.by_process, self._procs)

    @staticmethod
    def _rss(by_process: dict, procs=None) -> int:
        total = 0
        for p in PeakMemory._tree() if procs is None else procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:  # a process that just ended
                continue
            total += rss
            by_process[p.pid] = max(by_process.get(p.pid, 0), rss)
        return total

    def largest_child(self) -> int:
        """The highest peak RSS of any one child process (a worker), bytes; 0 without children."""
        me = os.getpid()
        return max((v for pid, v in self.by_process.items() if pid != me), default=0)

    def mark(self) -> int:
        """The peak summed RSS (bytes) since the last mark (or the start); starts a new phase."""
        now = self._sample()
        peak, self.phase_peak = max(self.phase_peak, now), now
        return peak

    def _run(self):
        while not self._stop.is_set():
            rss = self._sample()
            self.peak = max(self.peak, rss)
            self.phase_peak = max(self.phase_peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.baseline = self.peak = self.phase_peak = self._rss(self.by_process, self._tree(self.root))
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss(self.by_process, self._tree(self.root)))
        return False

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30
