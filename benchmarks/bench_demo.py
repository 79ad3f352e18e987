"""``mosaic demo`` as a newcomer runs it: wall time, time to the first line, the longest silence,
and the peak memory of all its processes.

    python benchmarks/bench_demo.py [--repeat 2]

The command runs in a fresh empty folder with its default options (the relative ``--out``
included). The peer, in the same run, is ``mosaic --version``: the fixed cost of starting the
command, so that the demo's first-line latency reads against the interpreter's own start-up. The
targets of issue 18: under 2 minutes on 2 cores, the first line within 2 s, a line at least every
10 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory  # noqa: E402


def _mosaic() -> list[str]:
    script = Path(sys.executable).parent / "mosaic"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mosaic"]


def timed_lines(cmd: list[str], cwd: Path) -> tuple[float, list[float], int]:
    """Run ``cmd``; its wall time, the times (from the start) of its output lines, and its exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamps: list[float] = []

    def read():
        for _ in proc.stdout:
            stamps.append(time.perf_counter() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join()
    return time.perf_counter() - t0, stamps, rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (default 2)")
    args = ap.parse_args()
    rows = []
    for i in range(args.repeat):
        here = Path(tempfile.mkdtemp(prefix="bench-demo-"))
        try:
            wall_v, stamps_v, rc_v = timed_lines([*_mosaic(), "--version"], here)
            with PeakMemory() as mem:
                wall, stamps, rc = timed_lines([*_mosaic(), "demo"], here)
            if rc or rc_v:
                print(f"run {i}: mosaic demo exited {rc}, --version {rc_v}")
                return 1
            gaps = [b - a for a, b in zip([0.0, *stamps], stamps, strict=False)]
            rows.append((wall, stamps[0], max(gaps), mem.peak / 2**30, wall_v, stamps_v[0] if stamps_v else wall_v))
        finally:
            shutil.rmtree(here, ignore_errors=True)
    print(f"{'run':>3} {'demo s':>7} {'first line s':>12} {'longest silence s':>17} {'peak GiB':>8} {'--version s':>11} {'first line / --version':>22}")
    for i, (wall, first, gap, peak, wall_v, first_v) in enumerate(rows):
        print(f"{i:>3} {wall:>7.1f} {first:>12.2f} {gap:>17.1f} {peak:>8.2f} {wall_v:>11.2f} {first / first_v:>22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
