"""Benchmark: the exact Fourier block solve of fusion objective (9) against conjugate gradients.

Run::

    python benchmarks/bench_fusion.py [--spaxels 42 84] [--wavelengths 200] [--components 5]
                                      [--cg-iterations 50]

A Titan-sized case (about 42 x 42 IFU spaxels of 0.1", d = 3, so 126 x 126 NIRCam pixels, the
five SW filters of G235H/F170LP) and larger areas are simulated (``mosaic.fusion.simulate``).
Each area is solved by

- *exact*: :func:`mosaic.fusion.solve.solve_exact`, one batched solve of (9 k) x (9 k) Fourier blocks;
- *CG*: :func:`mosaic.fusion.solve.solve_cg`, matrix-free conjugate gradients on the same normal
  equations with FFT convolutions, the SyFu way of solving (seed 003 runs 1000 iterations).
  ``--cg-iterations`` are run and timed; the time of 1000 is that per iteration times 1000
  (printed as such), unless ``--cg-iterations 1000``.

Printed per area: wall times, their ratio, peak traced memory (``tracemalloc``: NumPy's
allocations, not the interpreter's) of each, and how far CG's iterate still is from the exact
minimiser (relative L2). Nothing gates on time.

Memory peers. *CG* is matrix-free (it holds a few cubes of ``n_wave`` planes); its figure leaves
out the transfer functions of both PSF cubes on the fine grid, which it needs on every iteration
and which are computed before the measurement (printed apart, ``OTF MiB``). The exact solve
needs no such cache (it evaluates the PSFs' DFT at each batch of frequencies) and is measured
whole. SyFu's own peer, an assembled CSR normal matrix, is not run: its size is printed as an
estimate (``CSR GiB``: ``k n_pix`` rows of ``k (2 p - 1)^2`` nonzeros, ``p`` the larger PSF
side, 12 bytes each), for comparison with seed 003's 3.7 GB.

On a machine shared by many processes, run it with ``OPENBLAS_NUM_THREADS=1``: the exact solve's
many small products are otherwise dominated by BLAS threads waiting for cores.

``--write`` measures instead the output of tiled fusion: a lazy fused cube (``V Z + mean`` of
a random ``Z`` chunked in tiles, ``--spaxels`` side, ``--wavelengths`` channels, k = 5) written
by :func:`mosaic.io.cubes.write_fused` block by block, against computing it whole and writing
that (what the writer did before); peak traced memory (``tracemalloc``) and time of each, and
whether the two files are the same bytes.

``--quality`` prints instead the science figures on the simulated scene (30 x 30 spaxels, 120
wavelengths, k = 4, gamma = 1, mu = 1e-3) at several IFU signal-to-noise ratios (``--snr``, the
cube's peak over its noise sigma; the images at 200), averaged over the simulator seeds
``--seeds`` (10-14 by default: the mean-spectrum estimate was chosen on seeds 0-2, so these
scenes' noise is held out); ``--noiseless`` without noise. Per cube: the largest and the median
channel's relative error of the averaged spectrum against truth (and the largest against the IFU
cube, the seed's appendix D.2 figure), PSNR / SSIM against truth at three wavelengths and the
mean spectral angle on the sources, for the fused cube (mean spectrum projected on the signal
subspace, the default, and the IFU's mean as it is, the seed's), the IFU cube alone
(cubic-spline upsampled) and the NIRCam images alone (scaled mean spectrum).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from mosaic.fusion import metrics
from mosaic.fusion.objective import pca_subspace
from mosaic.fusion.simulate import scene_psfs, simulate_scene
from mosaic.fusion.solve import solve_cg, solve_exact

__all__ = ["main"]

MiB = 2.0**20


def _measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def _quality_rows(scene, n_components):
    """``{name: cube}`` of the contenders on one scene."""
    cubes = {}
    for mean in ("projected", "data"):
        sub = pca_subspace(scene.cube, n_components, mean=mean)
        cubes[f"fused ({mean} mean)"] = sub.expand(solve_exact(scene.images, scene.cube, scene.ops, sub, gamma=1.0, mu=1e-3))
    cubes["IFU upsampled"] = metrics.upsampled_ifu(scene.cube, scene.ops.factor)
    cubes["NIRCam only"] = metrics.nircam_only(scene.images, scene.ops.throughput, scene.cube.mean(axis=(1, 2)))
    return cubes


def quality(n_spaxels: int = 30, n_wave: int = 120, *, snrs=(20.0, 50.0, 200.0), seeds=(10, 11, 12, 13, 14), noiseless: bool = False) -> None:
    """Print the science figures of fusion on the simulated scene, averaged over ``seeds``, per IFU S/N in ``snrs``."""
    wavelengths = np.linspace(1.70, 2.25, n_wave)
    psfs = scene_psfs(wavelengths, factor=3)
    channels = [int(n_wave * f) for f in (0.2, 0.5, 0.8)]
    snr_list = [np.inf] if noiseless else list(snrs)
    head = "  ".join(f"{wavelengths[c]:.3f}um PSNR/SSIM" for c in channels)
    print(f"k = 4; figures are means over seeds {list(seeds)}; RE: relative error of the averaged spectrum, per channel")
    print(f"{'IFU S/N':>7} {'cube':>22}  RE max   RE med  {head}  SAM deg  RE max (IFU)")
    for snr in snr_list:
        rows, wins = {}, 0
        for seed in seeds:
            kw = {"snr_images": np.inf, "snr_cube": np.inf} if noiseless else {"snr_cube": snr}
            scene = simulate_scene(coarse_shape=(n_spaxels, n_spaxels), n_wave=n_wave, psfs=psfs, seed=seed, **kw)
            truth = scene.truth
            on = truth.mean(axis=0) > 0.05 * truth.mean(axis=0).max()
            worst = {}
            for name, cube in _quality_rows(scene, 4).items():
                re_t = np.abs(metrics.spectral_relative_error(truth, cube))
                figures = [re_t.max(), np.median(re_t)]
                for c in channels:
                    figures += [metrics.psnr(truth[c], cube[c]), metrics.ssim(truth[c], cube[c])]
                figures += [np.nanmean(metrics.spectral_angle(truth, cube)[on]), np.abs(metrics.spectral_relative_error(scene.cube, cube)).max()]
                rows.setdefault(name, []).append(figures)
                worst[name] = re_t.max()
            wins += worst["fused (projected mean)"] < worst["IFU upsampled"]
        for name, figures in rows.items():
            f = np.mean(figures, axis=0)
            cols = "  ".join(f"{f[2 + 2 * i]:>9.1f} / {f[3 + 2 * i]:.3f}" for i in range(len(channels)))
            print(f"{snr:>7g} {name:>22}  {100 * f[0]:5.2f}%  {100 * f[1]:5.2f}%  {cols}  {f[-2]:7.2f}  {100 * f[-1]:6.2f}%")
        if not noiseless:
            print(f"{snr:>7g} fused (projected mean) worst channel better than the IFU's on {wins} of {len(seeds)} seeds", flush=True)


def write_memory(n_spaxels: int, n_wave: int, *, tile: int = 40) -> None:
    """Print the peak memory and time of writing a tiled fused cube block by block and whole."""
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import dask.array as da  # noqa: PLC0415

    from mosaic.fusion.objective import Subspace  # noqa: PLC0415
    from mosaic.fusion.prepare import fine_wcs  # noqa: PLC0415
    from mosaic.fusion.simulate import scene_wcs  # noqa: PLC0415
    from mosaic.fusion.tiled import expand  # noqa: PLC0415
    from mosaic.io.cubes import write_fused  # noqa: PLC0415

    k, d = 5, 3
    wavelengths = np.linspace(1.70, 2.25, n_wave)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(n_wave, k)))[0]
    sub = Subspace(basis=basis, mean=np.linspace(1.0, 2.0, n_wave))
    z = da.random.default_rng(1).normal(size=(k, d * n_spaxels, d * n_spaxels), chunks=(k, d * tile, d * tile))
    cube = expand(z, sub)
    wcs = fine_wcs(scene_wcs((n_spaxels, n_spaxels), wavelengths), d)
    kw = {"basis": basis, "mean": sub.mean}
    cube_mib = 4 * n_wave * (d * n_spaxels) ** 2 / MiB
    print(f"{n_spaxels}^2 spaxels ({d * n_spaxels}^2 fine px), {n_wave} wavelengths, tiles of {tile}: the float32 cube is {cube_mib:.0f} MiB")
    cube[:1, :1, :1].compute()  # the scheduler's imports, not counted
    with tempfile.TemporaryDirectory() as tmp:
        streamed, t_s, m_s = _measure(lambda: write_fused(Path(tmp) / "streamed.fits", cube, wcs, wavelengths, **kw))
        whole, t_w, m_w = _measure(lambda: write_fused(Path(tmp) / "whole.fits", cube.compute(), wcs, wavelengths, **kw))
        same = streamed.read_bytes() == whole.read_bytes()
    print(f"{'write':>14} {'s':>7} {'peak MiB':>9}")
    print(f"{'block by block':>14} {t_s:7.1f} {m_s / MiB:9.0f}")
    print(f"{'whole':>14} {t_w:7.1f} {m_w / MiB:9.0f}")
    print(f"memory ratio {m_s / m_w:.3f}; same bytes: {same}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaxels", type=int, nargs="+", default=[42, 84], help="IFU field sides (spaxels)")
    p.add_argument("--wavelengths", type=int, default=200)
    p.add_argument("--components", type=int, default=5)
    p.add_argument("--cg-iterations", type=int, default=50)
    p.add_argument("--write", action="store_true", help="measure the memory of writing a tiled fused cube instead")
    p.add_argument("--tile", type=int, default=40, help="with --write: tile side in spaxels")
    p.add_argument("--quality", action="store_true", help="print the science figures on the simulated scene instead")
    p.add_argument("--noiseless", action="store_true", help="with --quality: the same scene without noise (is the error noise-limited?)")
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 50.0, 200.0], help="with --quality: IFU peak S/N of the scenes")
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14], help="with --quality: simulator seeds averaged over")
    args = p.parse_args(argv)
    if args.write:
        write_memory(args.spaxels[0], args.wavelengths, tile=args.tile)
        return 0
    if args.quality:
        quality(snrs=args.snr, seeds=args.seeds, noiseless=args.noiseless)
        return 0
    wavelengths = np.linspace(1.70, 2.25, args.wavelengths)
    t0 = time.perf_counter()
    psfs = scene_psfs(wavelengths, factor=3)
    print(f"PSF cubes for {args.wavelengths} wavelengths: {time.perf_counter() - t0:.1f} s (not counted)")
    print(f"k = {args.components}, d = 3, 5 filters, CG: {args.cg_iterations} iterations timed, 1000 extrapolated")
    head = ("spaxels", "fine px", "exact s", "CG 1000 s", "ratio", "exact MiB", "CG MiB", "mem ratio", "OTF MiB", "CSR GiB", "CG-exact")
    print(" ".join(f"{h:>9}" for h in head))
    for n in args.spaxels:
        scene = simulate_scene(coarse_shape=(n, n), n_wave=args.wavelengths, psfs=psfs, seed=1)
        sub = pca_subspace(scene.cube, args.components)
        kw = {"gamma": 1.0, "mu": 1e-3}
        scene.ops.otf("m"), scene.ops.otf("h")  # transfer functions once, for both contenders
        z_exact, t_exact, m_exact = _measure(lambda: solve_exact(scene.images, scene.cube, scene.ops, sub, **kw))  # noqa: B023
        (z_cg, n_it), t_cg, m_cg = _measure(
            lambda: solve_cg(scene.images, scene.cube, scene.ops, sub, rtol=0.0, maxiter=args.cg_iterations, **kw)  # noqa: B023
        )
        t_cg1000 = t_cg / max(n_it, 1) * 1000
        diff = np.linalg.norm(z_cg - z_exact) / np.linalg.norm(z_exact)
        otf = 16 * 2 * args.wavelengths * (3 * n) ** 2
        side = max(psfs[0].shape[1], psfs[1].shape[1])
        csr = 12 * args.components * (3 * n) ** 2 * args.components * (2 * side - 1) ** 2
        cols = (n, 3 * n, f"{t_exact:.2f}", f"{t_cg1000:.1f}", f"{t_cg1000 / t_exact:.0f}", f"{m_exact / MiB:.1f}")
        cols += (f"{m_cg / MiB:.0f}", f"{m_exact / m_cg:.3f}", f"{otf / MiB:.0f}", f"{csr / 2**30:.1f}", f"{diff:.1e}")
        print(" ".join(f"{c:>9}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
