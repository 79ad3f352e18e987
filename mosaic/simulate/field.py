"""A whole simulated NIRCam field: exposures, truth, PSFs, written as a real pipeline would.

``simulate_field(outdir, SimConfig(...))`` writes

- ``jw99999001001_01101_<k>_<det>_cal.fits``: JWST Stage-2 exposures (SCI in MJy/sr, ERR, DQ,
  VAR_POISSON, VAR_RNOISE, VAR_FLAT, SIP WCS in the SCI header);
- ``truth.fits``: the true sky (not convolved) on the output grid (pixel-scale ratio ``psr``),
  with its WCS; ``truth.ecsv``: the source table (RA/Dec, output-grid x/y, flux in µJy);
- ``psf_<band>.fits`` (sampled on the output grid) and ``psf_<band>_detector.fits`` (on the
  detector pixels), both integrated over pixels and normalised to 1;
- ``artifacts.ecsv``: every injected cosmic ray and hot pixel, flagged or not;
- ``grid.hdr``: the output grid's FITS header.

Exposures are rendered block by block (truth on the fine grid, convolved with the fine-grid
PSF, integrated over each detector pixel), so memory is set by ``block`` and the PSF size,
not by the number or size of the exposures.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from matplotlib.path import Path as PolygonPath
from scipy.signal import fftconvolve

from mosaic.io.cal import write_cal
from mosaic.io.grid import MosaicGrid
from mosaic.psf.files import write_psf
from mosaic.psf.model import BANDS, fwhm_arcsec, jwst_psf
from mosaic.simulate.detector import DetectorModel, integrate_pixels, observe
from mosaic.simulate.pointing import (
    LW_SCALE,
    SW_SCALE,
    channel_of,
    detector_of,
    dither_offsets,
    nircam_wcs,
)
from mosaic.simulate.sky import apply_colours, icl_model, make_sources, render

__all__ = ["SimConfig", "SimulatedField", "simulate_field", "flagship_config", "fine_grid_wcs"]

log = logging.getLogger(__name__)

#: approximate PHOTMJSR (MJy/sr per DN/s) of NIRCam module B filters
_PHOTMJSR = {"SW": 0.20, "LW": 0.30}


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Defaults make a small, quick short-wave field."""

    band: str = "F200W"
    # the band whose FWHM sets the source layout (pair separations, isolation): give several
    # bands of one field the same one, and the same seed, to observe the same sky in each
    layout_band: str | None = None
    n_exposures: int = 4  # dithers per pointing
    n_pointings: tuple[int, int] = (1, 1)
    size: int = 256  # detector side (2048 for real detectors)
    psr: float = 0.5  # output / input pixel scale
    psf_size: int = 101  # odd, on the output grid
    upsample: int = 2  # fine (truth) grid pixels per output pixel, per axis
    n_sub: int = 4  # integration samples per detector pixel, per axis
    n_wavelengths: int = 7
    seed: int = 0
    galaxy_density: float = 400.0  # per arcmin^2
    n_galaxies: int | None = None
    n_stars: int = 6
    n_pairs: int = 3
    icl: bool = True
    icl_amplitude: float = 0.02  # MJy/sr at r_eff
    background: float = 0.15  # MJy/sr sky
    noiseless: bool = False
    distortion: bool = True
    roll_sigma_deg: float = 0.1
    max_dither_px: float | None = None
    pointing_step_px: float | None = None
    crval: tuple[float, float] = (34.462141245715, -5.2370131013006)
    block: int = 512
    detector: DetectorModel = field(default_factory=DetectorModel)

    def __post_init__(self):
        for name in ("band", "layout_band"):
            value = getattr(self, name)
            if (value is not None or name == "band") and str(value).upper() not in BANDS:
                msg = f"{name} {value!r} unknown; expected one of {sorted(BANDS)}"
                raise ValueError(msg)
        if self.psf_size % 2 == 0 or self.psf_size < 3:
            msg = f"psf_size must be odd and >= 3; got {self.psf_size!r}"
            raise ValueError(msg)
        for name in ("n_exposures", "size", "upsample", "n_sub", "block"):
            if int(getattr(self, name)) < 1:
                msg = f"{name} must be a positive integer; got {getattr(self, name)!r}"
                raise ValueError(msg)
        if not self.psr > 0:
            msg = f"psr must be positive; got {self.psr!r}"
            raise ValueError(msg)

    @property
    def channel(self) -> str:
        return channel_of(self.band)

    @property
    def detector_scale(self) -> float:
        return SW_SCALE if self.channel == "SW" else LW_SCALE


def flagship_config(**overrides) -> SimConfig:
    """The paper's scale: 36 SW exposures of 2048² (3 x 3 pointings x 4 dithers), ~9584² at psr 0.5."""
    base = SimConfig(
        n_exposures=4,
        n_pointings=(3, 3),
        size=2048,
        psf_size=301,
        pointing_step_px=825.0,
        max_dither_px=40.0,
        n_stars=60,
        n_pairs=12,
    )
    return replace(base, **overrides)


@dataclass
class SimulatedField:
    """Paths and tables of a simulated field."""

    outdir: Path
    exposures: list[Path]
    truth_image: Path
    truth_table: Table
    psf: Path
    psf_detector: Path
    artifacts: Table
    grid: MosaicGrid
    config: SimConfig


def fine_grid_wcs(grid: MosaicGrid, upsample: int) -> WCS:
    """The fine truth grid: every output pixel split into ``upsample`` x ``upsample`` pixels."""
    w = grid.wcs.deepcopy()
    w.wcs.cd = w.wcs.cd / upsample
    # 0-based output coordinate c <-> fine coordinate upsample * (c + 0.5) - 0.5
    w.wcs.crpix = [upsample * (c - 1 + 0.5) - 0.5 + 1 for c in grid.wcs.wcs.crpix]
    w.pixel_shape = (grid.shape[1] * upsample, grid.shape[0] * upsample)
    return w


def _exposure_wcs(cfg: SimConfig, rng) -> list[WCS]:
    offsets = dither_offsets(
        cfg.n_exposures,
        size=cfg.size,
        n_pointings=tuple(cfg.n_pointings),
        pointing_step_px=cfg.pointing_step_px,
        max_dither_px=cfg.max_dither_px,
        rng=rng,
        roll_sigma_deg=cfg.roll_sigma_deg,
    )
    return [
        nircam_wcs(
            channel=cfg.channel,
            size=cfg.size,
            crval=cfg.crval,
            offset_arcsec=(off[0] * cfg.detector_scale, off[1] * cfg.detector_scale),
            roll_deg=roll,
            distortion=cfg.distortion,
        )
        for off, roll in offsets
    ]


def _coverage_polygons(grid: MosaicGrid, wcs_list, shape, upsample: int):
    """Fine-grid polygons of the union (for galaxies) and of the best-covered part (for stars)."""
    hulls = [grid.footprint_pixels(w, shape) for w in wcs_list]
    ny, nx = grid.shape
    step = max(1, min(ny, nx) // 200)
    yy, xx = np.mgrid[0:ny:step, 0:nx:step]
    pts = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    cover = np.zeros(len(pts), int)
    for h in hulls:
        cover += PolygonPath(h).contains_points(pts)
    union = pts[cover > 0]
    best = pts[cover >= max(1, int(np.ceil(0.75 * cover.max())))]

    def hull_of(p):
        from scipy.spatial import ConvexHull  # noqa: PLC0415

        v = p[ConvexHull(p).vertices]
        return upsample * (v + 0.5) - 0.5

    return hull_of(union), hull_of(best)


def _fine_pixmap(wcs: WCS, fine: WCS, rows: slice, cols: slice):
    """Fine-grid x, y of detector pixel centres for rows/cols, with a one-pixel border."""
    yy, xx = np.mgrid[rows.start - 1 : rows.stop + 1, cols.start - 1 : cols.stop + 1]
    ra, dec = wcs.all_pix2world(xx.astype(float), yy.astype(float), 0)
    fx, fy = fine.wcs_world2pix(ra, dec, 0)
    return fx, fy


def render_exposure(wcs: WCS, sources: Table, fine: WCS, psf_fine: np.ndarray, cfg: SimConfig, icl: dict | None, pixel_area_fine: float) -> np.ndarray:
    """Noiseless surface brightness (MJy/sr, no sky) of one exposure, block by block."""
    n = cfg.size
    out = np.zeros((n, n), dtype=np.float64)
    h = psf_fine.shape[0] // 2
    for y0 in range(0, n, cfg.block):
        for x0 in range(0, n, cfg.block):
            rows, cols = slice(y0, min(y0 + cfg.block, n)), slice(x0, min(x0 + cfg.block, n))
            fx, fy = _fine_pixmap(wcs, fine, rows, cols)
            # fine region that the samples need, plus the PSF halo so the convolution is exact there
            pad = h + 2 * cfg.upsample / cfg.psr + 2
            fx0, fx1 = int(np.floor(fx.min() - pad)), int(np.ceil(fx.max() + pad)) + 1
            fy0, fy1 = int(np.floor(fy.min() - pad)), int(np.ceil(fy.max() + pad)) + 1
            region = (slice(fy0, fy1), slice(fx0, fx1))
            truth = render(sources, region, pixel_area_sr=pixel_area_fine, icl=icl)
            conv = fftconvolve(truth, psf_fine, mode="same")
            out[rows, cols] = integrate_pixels(conv, fx - fx0, fy - fy0, n_sub=cfg.n_sub)
    return out


def _simulate_exposure(job, shared):
    """Render, observe and write one exposure; returns its path and injected artifacts."""
    k, wcs, rng, path = job
    sources, fine, psf_fine, cfg, icl, pixel_area_fine, det, band, detector = shared
    signal = render_exposure(wcs, sources, fine, psf_fine, cfg, icl, pixel_area_fine) + cfg.background
    arrays, art = observe(signal, det, rng=rng, noiseless=cfg.noiseless)
    art["exposure"] = k
    meta = _exposure_meta(cfg, band, detector, det, wcs, k)
    write_cal(path, wcs=wcs, meta=meta, overwrite=True, **arrays)
    log.info("exposure %d written: %s", k + 1, path.name)
    return path, art


def simulate_field(outdir, config: SimConfig | None = None, *, overwrite: bool = False, n_workers: int = 1) -> SimulatedField:
    """Simulate a NIRCam field with ground truth and write it to ``outdir``.

    Deterministic for ``config.seed`` (whatever ``n_workers``). See the module docstring for
    what is written. ``n_workers`` > 1 renders exposures in that many processes.
    """
    cfg = config or SimConfig()
    band = cfg.band.upper()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if not overwrite and any(outdir.glob("*_cal.fits")):
        msg = f"{outdir}: already holds _cal.fits files; pass overwrite=True (--overwrite) to replace them"
        raise FileExistsError(msg)
    ss = np.random.SeedSequence(cfg.seed)
    geo_rng, src_rng, *exp_seeds = (np.random.default_rng(s) for s in ss.spawn(2 + cfg.n_exposures * int(np.prod(cfg.n_pointings))))

    wcs_list = _exposure_wcs(cfg, geo_rng)
    shape = (cfg.size, cfg.size)
    grid = MosaicGrid.from_exposures(wcs_list, [shape] * len(wcs_list), psr=cfg.psr, tile=1024)
    fine = fine_grid_wcs(grid, cfg.upsample)
    fine_scale = grid.pixel_scale_arcsec / cfg.upsample
    pixel_area_fine = float(np.deg2rad(fine_scale / 3600.0) ** 2)
    log.info("simulating %d %s exposures of %d² on a %d x %d output grid", len(wcs_list), band, cfg.size, *grid.shape)

    # PSFs: on the fine grid for rendering, on the output grid and the detector for users
    fine_size = cfg.psf_size * cfg.upsample + (1 - cfg.upsample % 2)
    # the pupil must be sampled finely enough that a wide PSF field does not wrap around
    n_pupil = 256 if cfg.psf_size * grid.pixel_scale_arcsec < 12.0 else 512
    opts = {"n_wavelengths": cfg.n_wavelengths, "n_pupil": n_pupil}
    psf_fine = jwst_psf(band, pixel_scale_arcsec=fine_scale, size=fine_size, oversample=2, **opts)
    psf_out = jwst_psf(band, pixel_scale_arcsec=grid.pixel_scale_arcsec, size=cfg.psf_size, oversample=4, **opts)
    det_size = max(3, int(cfg.psf_size * cfg.psr) | 1)
    psf_det = jwst_psf(band, pixel_scale_arcsec=cfg.detector_scale, size=det_size, oversample=8, **opts)

    # sources
    union, best = _coverage_polygons(grid, wcs_list, shape, cfg.upsample)
    area_arcmin2 = grid.shape[0] * grid.shape[1] * (grid.pixel_scale_arcsec / 60.0) ** 2
    n_gal = cfg.n_galaxies if cfg.n_galaxies is not None else max(10, int(cfg.galaxy_density * area_arcmin2))
    sources = make_sources(
        union,
        rng=src_rng,
        fine_scale_arcsec=fine_scale,
        fwhm_arcsec=fwhm_arcsec((cfg.layout_band or band).upper()),
        n_galaxies=n_gal,
        n_stars=cfg.n_stars,
        n_pairs=cfg.n_pairs,
        star_poly=best,
    )
    # colours from their own stream, so that every band of a seed has the same layout
    sources = apply_colours(sources, band, rng=np.random.default_rng([cfg.seed, 2718]))
    icl = None
    if cfg.icl:
        fy, fx = grid.shape[0] * cfg.upsample, grid.shape[1] * cfg.upsample
        icl = icl_model((fy, fx), amplitude=cfg.icl_amplitude, r_eff_px=0.3 * max(fy, fx), centre=((fx - 1) / 2, (fy - 1) / 2))

    det = replace(cfg.detector, photmjsr=_PHOTMJSR[cfg.channel])
    detector = detector_of(band)
    jobs = [
        (k, wcs, rng, outdir / f"jw99999001001_01101_{k + 1:05d}_{detector.lower()}_cal.fits")
        for k, (wcs, rng) in enumerate(zip(wcs_list, exp_seeds, strict=True))
    ]
    shared = (sources, fine, psf_fine, cfg, icl, pixel_area_fine, det, band, detector)
    if n_workers > 1 and len(jobs) > 1:
        # exposures are independent: one process each, memory per process set by cfg.block
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(_simulate_exposure, jobs, [shared] * len(jobs)))
    else:
        done = [_simulate_exposure(job, shared) for job in jobs]
    paths = [p for p, _ in done]
    artifacts = [a for _, a in done]

    # truth on the output grid: mean of the fine truth over each output pixel, tile by tile
    truth_path = outdir / "truth.fits"
    _write_truth(truth_path, grid, sources, icl, cfg.upsample, pixel_area_fine)
    table = _truth_table(sources, fine, grid, cfg.upsample)
    _write_table(table, outdir / "truth.ecsv")
    art_all = _vstack(artifacts)
    _write_table(art_all, outdir / "artifacts.ecsv")
    psf_path = write_psf(outdir / f"psf_{band.lower()}.fits", psf_out, pixel_scale_arcsec=grid.pixel_scale_arcsec, band=band)
    psfd_path = write_psf(outdir / f"psf_{band.lower()}_detector.fits", psf_det, pixel_scale_arcsec=cfg.detector_scale, band=band)
    (outdir / "grid.hdr").write_text(grid.to_header().tostring(sep="\n"))
    return SimulatedField(outdir, paths, truth_path, table, psf_path, psfd_path, art_all, grid, cfg)


def _exposure_meta(cfg: SimConfig, band: str, detector: str, det: DetectorModel, wcs: WCS, k: int) -> dict:
    c = wcs.pixel_to_world((cfg.size - 1) / 2, (cfg.size - 1) / 2)
    pixar_sr = float(np.deg2rad(cfg.detector_scale / 3600.0) ** 2)
    return {
        "TELESCOP": "JWST",
        "INSTRUME": "NIRCAM",
        "DETECTOR": detector,
        "MODULE": "B",
        "CHANNEL": "SHORT" if cfg.channel == "SW" else "LONG",
        "FILTER": band,
        "PUPIL": "CLEAR",
        "EXPTIME": det.exptime,
        "NOUTPUTS": det.n_amps,
        "EFFEXPTM": det.exptime,
        "EXPOSURE": k + 1,
        "TARG_RA": float(c.ra.deg),
        "TARG_DEC": float(c.dec.deg),
        "DATE-OBS": "2026-01-01",
        "ORIGIN": "mosaic.simulate",
        "SIMSEED": cfg.seed,
        "PHOTMJSR": det.photmjsr,
        "PHOTUJA2": det.photmjsr * 1e12 / (180 / np.pi * 3600) ** 2,
        "PIXAR_SR": pixar_sr,
        "PIXAR_A2": cfg.detector_scale**2,
        "BUNIT": "MJy/sr",
    }


def _write_truth(path: Path, grid: MosaicGrid, sources: Table, icl, up: int, pixel_area_fine: float) -> None:
    hdr = grid.to_header()
    hdr["BUNIT"] = "MJy/sr"
    hdr["COMMENT"] = "true sky (not convolved), mean over each output pixel"
    tmp = path.with_name(f".{path.name}.part")
    fits.PrimaryHDU(np.zeros(grid.shape, np.float32), header=hdr).writeto(tmp, overwrite=True)
    with fits.open(tmp, mode="update", memmap=True) as hdul:
        data = hdul[0].data
        for t in grid.tiles():
            ys, xs = t.core
            region = (slice(ys.start * up, ys.stop * up), slice(xs.start * up, xs.stop * up))
            img = render(sources, region, pixel_area_sr=pixel_area_fine, icl=icl)
            data[ys, xs] = img.reshape(t.shape[0], up, t.shape[1], up).mean(axis=(1, 3))
        hdul.flush()
    os.replace(tmp, path)


def _truth_table(sources: Table, fine: WCS, grid: MosaicGrid, up: int) -> Table:
    t = sources.copy()
    ra, dec = fine.wcs_pix2world(np.asarray(t["x"]), np.asarray(t["y"]), 0)
    t["ra"], t["dec"] = ra, dec
    t["ra"].unit = t["dec"].unit = "deg"
    # output-grid pixel coordinates of the sources; sizes in output pixels
    t["x"] = (np.asarray(t["x"]) + 0.5) / up - 0.5
    t["y"] = (np.asarray(t["y"]) + 0.5) / up - 0.5
    t["r_eff"] = np.asarray(t["r_eff"]) / up
    t.meta["comment"] = "x, y and r_eff in output-grid pixels (0-based); flux in uJy (AB mag)"
    return t


def _write_table(table: Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    table.write(tmp, format="ascii.ecsv", overwrite=True)
    os.replace(tmp, path)


def _vstack(tables):
    from astropy.table import vstack  # noqa: PLC0415

    return vstack(tables) if tables else Table()
