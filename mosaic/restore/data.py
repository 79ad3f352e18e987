"""Training and evaluation pairs from mosaic's own simulator.

A pair is (input, target) on the same output grid:

- *input*: what mosaic makes of a field -- the drizzle mosaic (square kernel, pixfrac 1, ivm
  weights) of the simulated dithered ``_cal.fits`` exposures of :func:`mosaic.simulate.simulate_field`,
  with their noise, cosmic rays flagged by DQ, sky, and NaN where no exposure reaches;
- *target*: the noiseless truth on the output grid (``truth.fits``, the sky averaged over each
  output pixel, no sky background) convolved with the *reference PSF*: a circular Gaussian of
  FWHM :data:`REFERENCE_FWHM_PX` output pixels (0.031" at F200W and pixel-scale ratio 0.5, about
  half the F200W PSF's FWHM), point-sampled and normalised to 1; then put on the level of the
  input less its global sky estimate: the intracluster light is in both, and the part of it that
  the global sky estimate absorbs (``sky - background``) is taken off the target too, so that the
  network is not asked to guess a level that no local pixel shows.

Fields are seeded; each draws its number of exposures, galaxy count and sky level, so depth and
crowding vary. :func:`build_dataset` writes the pairs once to an ``.npz`` cache that training
reads; nothing here needs PyTorch.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.signal import fftconvolve

from mosaic.restore.infer import DRIZZLE_KERNEL, DRIZZLE_PIXFRAC
from mosaic.restore.normalise import estimate_normalisation

__all__ = ["REFERENCE_FWHM_PX", "Pair", "reference_psf", "simulate_pair", "build_dataset", "load_dataset", "BAND", "PSR"]

log = logging.getLogger(__name__)

#: FWHM of the Gaussian reference PSF of the targets, in output pixels
REFERENCE_FWHM_PX = 2.0

#: the band and pixel-scale ratio the shipped model is trained for
BAND = "F200W"
PSR = 0.5


@dataclass
class Pair:
    """One simulated field as a training/evaluation pair."""

    input: np.ndarray  # drizzle SCI, MJy/sr, NaN where uncovered
    target: np.ndarray  # truth convolved with the reference PSF, MJy/sr, no sky
    truth: np.ndarray  # truth on the output grid (not convolved)
    psf: np.ndarray  # the band's PSF on the output grid (for single-image baselines)
    header: fits.Header  # output grid WCS
    table: Table  # truth source table (output-grid x/y)
    pixel_scale_arcsec: float
    band: str
    sky: float
    sigma: float
    updc: np.ndarray | None = None  # UPDC's iterate (sky included, NaN uncovered) when asked for


def reference_psf(fwhm_px: float = REFERENCE_FWHM_PX, *, size: int | None = None) -> np.ndarray:
    """The circular Gaussian reference PSF, point-sampled on an odd grid, summing to 1."""
    sigma = fwhm_px / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    size = size or 2 * int(np.ceil(4 * sigma)) + 1
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def _field_config(seed: int, *, size: int, band: str, psr: float):
    from mosaic.simulate import SimConfig  # noqa: PLC0415

    rng = np.random.default_rng([seed, 20])
    return SimConfig(
        band=band,
        seed=seed,
        size=size,
        psr=psr,
        psf_size=51,
        n_wavelengths=3,
        n_exposures=int(rng.choice([2, 4, 6])),
        n_galaxies=int(rng.integers(30, 90)),
        n_stars=int(rng.integers(3, 10)),
        n_pairs=int(rng.integers(2, 6)),
        background=float(rng.choice([0.1, 0.15, 0.3])),
    )


def simulate_pair(workdir, seed: int, *, size: int = 256, band: str = BAND, psr: float = PSR, keep: bool = False,
                  updc_iterations: int = 0) -> Pair:
    """Simulate one field, drizzle it with mosaic and make its (input, target) pair.

    Parameters
    ----------
    workdir : path-like
        Scratch directory for the field's files (removed afterwards unless ``keep``).
    seed : int
        Field seed (geometry, sources, noise, and the drawn depth and crowding).
    size : int
        Detector side of the simulated exposures.
    band, psr : str, float
        Filter and output/input pixel-scale ratio.
    keep : bool
        Keep the simulated files.
    updc_iterations : int
        Also run UPDC (:func:`mosaic.coadd.updc.updc`, its defaults) on the exposures for this
        many iterations and keep the last iterate (``Pair.updc``); 0: not run.
    """
    from mosaic.coadd.drizzle import drizzle_mosaic  # noqa: PLC0415
    from mosaic.io.cal import read_exposures  # noqa: PLC0415
    from mosaic.simulate import simulate_field  # noqa: PLC0415

    workdir = Path(workdir) / f"field_{seed}"
    cfg = _field_config(seed, size=size, band=band, psr=psr)
    sim = simulate_field(workdir, cfg, overwrite=True)
    mosaic = drizzle_mosaic(read_exposures(sim.exposures), sim.grid, pixfrac=DRIZZLE_PIXFRAC, kernel=DRIZZLE_KERNEL).compute()
    sci = mosaic.sci.values.astype(np.float32)
    sci[~(mosaic.wht.values > 0)] = np.nan
    truth = fits.getdata(sim.truth_image).astype(np.float32)
    target = fftconvolve(truth, reference_psf(), mode="same").astype(np.float32)
    psf = fits.getdata(sim.psf).astype(np.float64)
    norm = estimate_normalisation(sci)
    target = (target - (norm.sky - cfg.background)).astype(np.float32)
    pair = Pair(sci, target, truth, psf, sim.grid.to_header(), sim.truth_table, sim.grid.pixel_scale_arcsec, band, norm.sky, norm.sigma)
    if updc_iterations:
        from mosaic.coadd.updc import updc  # noqa: PLC0415

        result = updc(read_exposures(sim.exposures), sim.grid, str(sim.psf), n_iterations=updc_iterations, errors=False,
                      background=None)
        it = result.iterations[updc_iterations]["sci"].values.astype(np.float32)
        pair.updc = np.where(np.isfinite(sci), it, np.nan).astype(np.float32)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("field %d: %s, %d exposures, sky %.4g sigma %.4g", seed, sci.shape, cfg.n_exposures, norm.sky, norm.sigma)
    return pair


def build_dataset(path, seeds, *, workdir="/tmp/mosaic-restore-sim", size: int = 256, band: str = BAND, psr: float = PSR) -> Path:
    """Simulate the fields of ``seeds`` and write their pairs to one ``.npz`` file.

    Keys: ``input_<k>``, ``target_<k>`` (on the input's sky-subtracted level), ``sky`` and
    ``sigma`` (per field), ``seeds``, ``band``,
    ``pixel_scale_arcsec``, ``reference_fwhm_px``.
    """
    path = Path(path)
    arrays, skies, sigmas, scale = {}, [], [], None
    for k, seed in enumerate(seeds):
        p = simulate_pair(workdir, int(seed), size=size, band=band, psr=psr)
        arrays[f"input_{k}"], arrays[f"target_{k}"] = p.input, p.target
        skies.append(p.sky)
        sigmas.append(p.sigma)
        scale = p.pixel_scale_arcsec
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, levelled=True, seeds=np.asarray(seeds), sky=np.asarray(skies), sigma=np.asarray(sigmas), band=band,
                        pixel_scale_arcsec=scale, reference_fwhm_px=REFERENCE_FWHM_PX, **arrays)
    tmp.replace(path)
    log.info("wrote %d pairs to %s", len(seeds), path)
    return path


def load_dataset(path) -> dict:
    """The pairs of a cache written by :func:`build_dataset`: lists ``inputs``, ``targets``, and the metadata."""
    with np.load(path) as z:
        n = len(z["seeds"])
        targets = [z[f"target_{k}"] for k in range(n)]
        if "levelled" not in z:  # caches from before the target was put on the input's level
            for k, seed in enumerate(z["seeds"]):
                bg = _field_config(int(seed), size=256, band=str(z["band"]), psr=PSR).background
                targets[k] = (targets[k] - (z["sky"][k] - bg)).astype(np.float32)
        return {
            "inputs": [z[f"input_{k}"] for k in range(n)],
            "targets": targets,
            "sky": z["sky"], "sigma": z["sigma"], "seeds": z["seeds"],
            "band": str(z["band"]), "pixel_scale_arcsec": float(z["pixel_scale_arcsec"]),
            "reference_fwhm_px": float(z["reference_fwhm_px"]),
        }


if __name__ == "__main__":  # python -m mosaic.restore.data OUT.npz FIRST_SEED N
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    first, n = int(sys.argv[2]), int(sys.argv[3])
    build_dataset(sys.argv[1], list(range(first, first + n)))
