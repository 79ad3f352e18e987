"""Simulator memory is bounded by the render block, not by the number of exposures.

Runs ``mosaic simulate`` in a fresh process for N and for 2N exposures of SIZE² and prints the
wall time and the peak memory (all processes) of each, and their ratios. Bounded memory means a
memory ratio near 1 while the time ratio is near 2.

    python benchmarks/bench_simulate.py --size 2048 --exposures 1 --psf-size 301
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402


def run(n: int, size: int, psf_size: int, workdir: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "simulate", str(workdir / f"n{n}"), "--exposures", str(n), "--size", str(size), "--psf-size", str(psf_size)]
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        subprocess.run(cmd, check=True)
    return time.perf_counter() - t0, mem.peak_gib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--exposures", type=int, default=1)
    ap.add_argument("--psf-size", type=int, default=201)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t1, m1 = run(args.exposures, args.size, args.psf_size, Path(d))
        t2, m2 = run(2 * args.exposures, args.size, args.psf_size, Path(d))
    print(f"{'exposures':>10} {'wall s':>8} {'peak GiB':>9}")
    print(f"{args.exposures:>10} {t1:>8.1f} {m1:>9.2f}")
    print(f"{2 * args.exposures:>10} {t2:>8.1f} {m2:>9.2f}")
    print(f"ratio 2N/N: time {t2 / t1:.2f}, peak memory {m2 / m1:.2f}")


if __name__ == "__main__":
    main()
