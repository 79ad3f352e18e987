"""Probe: does a second process add throughput on this machine right now?

A pure-Python loop of fixed work is split over a fork pool of 1 and of 2 processes; on two free
cores the second run takes about half the wall time of the first. On a shared machine it tells
whether a ``--workers 2`` figure can show a speed-up at all at the moment it is measured.

Usage::

    python benchmarks/probe_cores.py [--work 20000000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time


def _burn(n: int) -> float:
    t = time.process_time()
    x = 0
    for i in range(n):
        x += i * i
    return time.process_time() - t


def run(k: int, work: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``work`` loop steps split over ``k`` forked processes."""
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(k) as pool:
        cpu = pool.map(_burn, [work // k] * k)
    return time.perf_counter() - t0, sum(cpu)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=int, default=20_000_000)
    args = ap.parse_args(argv)
    walls = {}
    for k in (1, 2):
        walls[k], cpu = run(k, args.work)
        print(f"{k} process(es): wall {walls[k]:.2f} s, CPU {cpu:.2f} s")
    print(f"speed-up of 2 over 1: {walls[1] / walls[2]:.2f} (2.0 on two free cores)")


if __name__ == "__main__":
    main()
