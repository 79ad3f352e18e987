"""The machine's own speed-up from more processes, measured beside a benchmark's runs.

A speed-up of 2 workers over 1 is bounded by what the machine gives a second process: on a
virtual machine whose cores are shared with other guests, two copies of the same
single-threaded job do not always finish in the time of one. :func:`parallel_ceiling` runs a
fixed NumPy job (FFTs of a 1024² image: arithmetic and memory traffic, one thread) in one
process, then in ``n`` processes started together, and returns ``n t_1 / max(t_n)``: the
speed-up a perfectly parallel program would have shown in the same minute. A benchmark prints
it next to its own ratio, so that a round where the machine gave 1.5x is not read as the code's
failure, nor one where it gave 1.9x as the code's success.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

__all__ = ["ceiling_row", "parallel_ceiling", "speedup_summary"]

# the job each process runs, after waiting for a common start time (argv[1], time.time() seconds);
# prints the job's own seconds (not the interpreter's start)
_JOB = """
import sys, time
import numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024))
repeats = int(sys.argv[2])
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
t = time.perf_counter()
for _ in range(repeats):
    a = np.fft.irfft2(np.fft.rfft2(a), a.shape)
print(time.perf_counter() - t)
"""

#: one thread per process, whatever the NumPy build would start
_ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _run(n: int, repeats: int) -> list[float]:
    """The job's seconds in each of ``n`` processes started together."""
    start = time.time() + 1.0  # every interpreter is up and has its array by then
    env = {**os.environ, **_ONE_THREAD}
    procs = [
        subprocess.Popen([sys.executable, "-c", _JOB, repr(start), str(repeats)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(n)
    ]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"the ceiling's job failed ({p.returncode})")
        out.append(float(text))
    return out


def parallel_ceiling(n: int = 2, repeats: int = 100) -> dict:
    """The speed-up of ``n`` processes over one on the same fixed job, measured now.

    Returns ``{"ceiling": n t_1 / max(t_n), "one": t_1, "each": [t_n, ...]}`` (seconds of the
    job itself in each process).
    """
    (one,) = _run(1, repeats)
    each = _run(n, repeats)
    return {"ceiling": n * one / max(each), "one": one, "each": each}



def ceiling_row(size: int, r: int) -> float:
    """:func:`parallel_ceiling` now, printed as a ``ceiling`` row of round ``r`` of a benchmark's
    table (columns size, round, run, load); returns the ceiling."""
    got = parallel_ceiling()
    print(f"{size:>5} {r:>5} {'ceiling':>9} {os.getloadavg()[0]:>5.1f}   one process {got['one']:.2f} s, two {max(got['each']):.2f} s: {got['ceiling']:.2f}x")
    return got["ceiling"]


def speedup_summary(speedups: list[float], ceilings: list[float]) -> str:
    """``w1/w2 speed-up`` (median of the rounds), with the machine's ceiling of the same rounds and
    the median of each round's speed-up over its ceiling."""
    text = f"w1/w2 speed-up {statistics.median(speedups):.2f}"
    if ceilings:
        shares = [s / c for s, c in zip(speedups, ceilings, strict=True)]
        text += (
            f" (rounds {', '.join(f'{s:.2f}' for s in speedups)}); the machine's ceiling {statistics.median(ceilings):.2f}"
            f" (rounds {', '.join(f'{c:.2f}' for c in ceilings)}); speed-up / ceiling {statistics.median(shares):.2f}"
        )
    return text


if __name__ == "__main__":
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        got = parallel_ceiling()
        print(f"1 process {got['one']:.2f} s; 2 processes {', '.join(f'{t:.2f}' for t in got['each'])} s; ceiling {got['ceiling']:.2f}x")

