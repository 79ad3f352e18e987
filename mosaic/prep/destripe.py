"""1/f destriping of cal exposures, file by file (seed 000 sec. 2.1), written as ``_1fc.fits``.

Each exposure is one task: read, measure the stripe pattern
(:func:`mosaic.ops.destripe.stripe_model`), subtract it from SCI, write the cleaned exposure in
the cal layout (temporary name, renamed when whole). ERR and the variances are kept: the
pattern is measured from hundreds of pixels per row, so its own noise is small beside a pixel's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import numpy as np
from astropy.io import fits

from mosaic.ops.destripe import amplifier_slices, stripe_model
from mosaic.prep import check_mesh, exposure_arrays, output_paths, read_inputs, write_cleaned
from mosaic.progress import compute
from mosaic.registry import algorithm

__all__ = ["destripe_exposures", "n_amplifiers"]

log = logging.getLogger(__name__)


def n_amplifiers(path, nx: int) -> int | None:
    """Amplifiers of an exposure from its NOUTPUTS keyword (JWST), or None if it has none."""
    with fits.open(path, memmap=True) as hdul:
        value = hdul[0].header.get("NOUTPUTS", hdul["SCI"].header.get("NOUTPUTS"))
    if value is None:
        return None
    n = int(value)
    if n < 1 or nx % n:
        log.warning("%s: NOUTPUTS = %r does not divide %d columns; taking one amplifier", path, value, nx)
        return 1
    return n


def _destripe_one(source, target, sci, err, dq, var_poisson, var_rnoise, var_flat, good, *, n_amps, columns, box_size):
    model = stripe_model(sci, good=good, n_amps=n_amps, columns=columns, box_size=box_size)
    arrays = {
        "sci": np.where(np.isfinite(sci), sci - model, sci).astype(np.float32),
        "err": err, "dq": dq, "var_poisson": var_poisson, "var_rnoise": var_rnoise, "var_flat": var_flat,
    }
    write_cleaned(source, target, arrays, status_key="S_DESTRP")
    return float(np.sqrt(np.mean(model.astype(np.float64) ** 2)))


@algorithm("preprocessing")
def destripe_exposures(
    paths,
    outdir,
    *,
    n_amps: int | None = None,
    columns: bool = True,
    box_size: int = 256,
    bad_bits=None,
    overwrite: bool = False,
    client=None,
) -> list[Path]:
    """Remove 1/f striping from cal exposures; write ``_1fc.fits`` files.

    Parameters
    ----------
    paths : list of path-like
        ``_cal.fits`` (or ``_crf.fits``) exposures.
    outdir : path-like
        Directory of the cleaned files (made if missing): ``<name>_1fc.fits``.
    n_amps : int, optional
        Amplifiers along x. By default the file's NOUTPUTS keyword, else four for a
        2048-wide full frame and one for anything else (subarrays).
    columns : bool
        Also remove the column pattern (median over the whole height).
    box_size : int
        Mesh size (pixels) of the background taken out before the pattern is measured.
    bad_bits : int or str, optional
        DQ bits of pixels left out of the measurement (default DO_NOT_USE + NON_SCIENCE).
    overwrite : bool
        Replace existing output files.
    client : distributed.Client, optional
        Compute on this cluster (default: the current client, or threads here).

    Returns
    -------
    list of Path
        The written files, in the order of ``paths``.
    """
    check_mesh(box_size, least=8, typical="a few hundred for full frames")
    paths, _, exposures = read_inputs(paths, bad_bits)
    nx = exposures.sizes["x"]
    amps = []
    for p in paths:
        n = n_amps if n_amps is not None else n_amplifiers(p, nx)
        amplifier_slices(nx, n)  # checks an explicit n_amps before any work
        amps.append(n)
    targets = output_paths(paths, outdir, "_1fc", overwrite=overwrite)
    jobs = [
        dask.delayed(_destripe_one, pure=True)(
            str(src), str(dst), *exposure_arrays(exposures, k), n_amps=amps[k], columns=columns, box_size=int(box_size),
        )
        for k, (src, dst) in enumerate(zip(paths, targets, strict=True))
    ]
    log.info("destripe: %d exposures -> %s", len(paths), outdir)
    rms = compute(*jobs, description="destripe", client=client)
    for dst, r in zip(targets, rms, strict=True):
        log.info("destripe: %s: pattern rms %.3g MJy/sr removed", dst.name, r)
    return targets
