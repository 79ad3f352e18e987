"""Load on ``mosaic serve``: many concurrent preview and statistics requests against one mosaic.

Run::

    python benchmarks/bench_service.py --size 4096 --requests 200

Writes a ``size``² float32 FITS image (noisy sky with sources, written row block by row
block), starts ``mosaic serve`` on 127.0.0.1 with a local cluster, and measures:

* **peer**: the library called directly in this process, once each:
  :func:`mosaic.viz.preview.write_preview` and :func:`mosaic.image.stats.image_statistics`;
* **cold**: the first ``GET /preview`` and ``GET /statistics`` of the image (computed on the cluster);
* **load**: ``--requests`` requests at once on loopback, half previews (cycling through the
  stretches, so several previews are computed while others wait), half statistics; latency
  percentiles, failures, and the peak RSS of the service's process tree (the web process and
  its cluster's workers, sampled every 20 ms).

Nothing here gates anything on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from astropy.io import fits

__all__ = ["main"]

MiB = 2.0**20
STRETCHES = ("asinh", "linear", "sqrt", "log", "zscale", "histeq", "power")


def write_mosaic(path: Path, size: int, *, block: int = 512, seed: int = 1) -> Path:
    """A ``size``² float32 image: sky, noise and Gaussian sources, never whole in memory."""
    rng = np.random.default_rng(seed)
    header = fits.Header()
    header.update(SIMPLE=True, BITPIX=-32, NAXIS=2, NAXIS1=size, NAXIS2=size, BUNIT="MJy/sr")
    stream = fits.StreamingHDU(str(path), header)
    xs = np.arange(size)
    for y0 in range(0, size, block):
        rows = np.arange(y0, min(size, y0 + block))
        data = 0.3 + rng.normal(0.0, 0.05, (len(rows), size))
        for _ in range(40):
            x0, yc, s = rng.uniform(0, size), rng.uniform(y0 - 10, y0 + block + 10), rng.uniform(1.5, 4.0)
            data += rng.uniform(1, 30) / (2 * np.pi * s * s) * np.exp(
                -((xs[None, :] - x0) ** 2 + (rows[:, None] - yc) ** 2) / (2 * s * s))
        stream.write(data.astype(">f4"))
    stream.close()
    return path


class TreeMemory:
    """Peak summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.proc, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, image_id: str, n: int, max_size: int) -> tuple[list[float], list[str]]:
    import httpx  # noqa: PLC0415

    async def one(i: int, client):
        path = (f"/preview/{image_id}?stretch={STRETCHES[i // 2 % len(STRETCHES)]}&max_size={max_size}"
                if i % 2 == 0 else f"/statistics/{image_id}")
        t0 = time.perf_counter()
        try:
            r = await client.get(path)
            ok = r.status_code == 200
            why = "" if ok else f"{r.status_code} {r.text[:200]}"
        except Exception as err:  # a failed request is counted, not raised
            ok, why = False, f"{type(err).__name__}: {err}"
        return time.perf_counter() - t0, why

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        results = await asyncio.gather(*(one(i, client) for i in range(n)))
    return [t for t, _ in results], [w for _, w in results if w]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the mosaic in pixels (default 4096)")
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests (default 200)")
    parser.add_argument("--max-size", type=int, default=1024, help="preview size (default 1024)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the service's cluster (default 2)")
    args = parser.parse_args(argv)

    import httpx  # noqa: PLC0415

    from mosaic.image.stats import image_statistics  # noqa: PLC0415
    from mosaic.io.images import read_fits_image  # noqa: PLC0415
    from mosaic.viz.preview import write_preview  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        image = write_mosaic(tmp / "data" / "mosaic.fits", args.size)
        print(f"mosaic {args.size}² float32: {image.stat().st_size / MiB:.0f} MiB")

        t0 = time.perf_counter()
        write_preview(tmp / "direct.png", image, max_size=args.max_size)
        direct_preview = time.perf_counter() - t0
        t0 = time.perf_counter()
        image_statistics(read_fits_image(image).data)
        direct_stats = time.perf_counter() - t0

        port = _free_port()
        cluster = {"kind": "local", "n_workers": args.workers, "threads_per_worker": 1, "dashboard_address": ":0"}
        cmd = [sys.executable, "-m", "mosaic", "--log-level", "WARNING", "serve", "--data", str(tmp / "data"),
               "--store", str(tmp / "store.zarr"), "--port", str(port), "--cluster", json.dumps(cluster)]
        proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, "MOSAIC_PROGRESS": "0"})
        url = f"http://127.0.0.1:{port}"
        try:
            http = httpx.Client(base_url=url, timeout=600)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mosaic serve did not start")
                time.sleep(0.2)
            image_id = http.get("/images").json()["images"][0]["id"]
            idle = TreeMemory(proc.pid).now()
            t0 = time.perf_counter()
            assert http.get(f"/preview/{image_id}?max_size={args.max_size}").status_code == 200
            cold_preview = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert http.get(f"/statistics/{image_id}").status_code == 200
            cold_stats = time.perf_counter() - t0
            with TreeMemory(proc.pid) as memory:
                t0 = time.perf_counter()
                latencies, failures = asyncio.run(_load(url, image_id, args.requests, args.max_size))
                wall = time.perf_counter() - t0
            http.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)

    lat = np.array(latencies)
    print("\n| what | seconds | ratio to the direct call |\n| --- | --- | --- |")
    print(f"| direct write_preview (peer) | {direct_preview:.2f} | 1.00 |")
    print(f"| cold GET /preview | {cold_preview:.2f} | {cold_preview / direct_preview:.2f} |")
    print(f"| direct image_statistics (peer) | {direct_stats:.2f} | 1.00 |")
    print(f"| cold GET /statistics | {cold_stats:.2f} | {cold_stats / direct_stats:.2f} |")
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    print(f"\n{args.requests} concurrent requests ({len(STRETCHES)} stretches of previews, and statistics) in {wall:.2f} s: "
          f"p50 {p50:.3f} s, p90 {p90:.3f} s, p99 {p99:.3f} s, max {lat.max():.3f} s; failed {len(failures)}")
    print(f"service process tree RSS: idle {idle / MiB:.0f} MiB, peak under load {memory.peak / MiB:.0f} MiB")
    for why in failures[:5]:
        print("failure:", why)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
