"""Preprocessing of exposures before coaddition (seed 000 sec. 2.1-2.2): outliers, 1/f striping, background structure, sky levels.

``clean_exposures`` (:mod:`mosaic.prep.outliers`) flags cosmic rays and hot pixels against the
other exposures and writes ``_crf.fits`` files; ``destripe_exposures``
(:mod:`mosaic.prep.destripe`) removes 1/f striping and writes ``_1fc.fits`` files;
``flatten_background`` (:mod:`mosaic.prep.background`) takes out the background's structure
(ICL, gradients), keeping the sky level, and writes ``_bkg.fits`` files; ``match_skies``
(:mod:`mosaic.prep.skymatch`) matches the exposures' sky levels over their overlaps and writes
``_skm.fits`` files. All write JWST
Stage-2 files in the cal layout, so the drizzle and UPDC steps read them as cal files.

This module holds what the drivers share: output names, the checks on the inputs and on the
output directory, and the writing of one cleaned exposure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from astropy.io import fits

from mosaic.exceptions import InputError
from mosaic.io.cal import read_wcs, write_cal

__all__ = ["ORDER", "SUFFIXES", "check_mesh", "cleaned_path", "exposure_arrays", "output_paths", "read_inputs", "write_cleaned"]

log = logging.getLogger(__name__)

#: the preprocessing steps, in the one order that every entry point (``mosaic run`` and the
#: commands' ``--outliers``/``--destripe``/``--flatten-background``/``--skymatch``) runs them: ``(name, module,
#: function)``. Outliers come first, so that cosmic rays do not bias the stripe and background
#: models; then the background's structure, from exposures already clean; the sky levels are
#: matched last, between exposures whose backgrounds are flat.
ORDER = (
    ("outliers", "mosaic.prep.outliers", "clean_exposures"),
    ("destripe", "mosaic.prep.destripe", "destripe_exposures"),
    ("background", "mosaic.prep.background", "flatten_background"),
    ("skymatch", "mosaic.prep.skymatch", "match_skies"),
)

#: JWST product suffixes that an output name replaces
SUFFIXES = ("_cal", "_crf", "_1fc", "_bkg", "_skm")

# primary-header cards that write_cal makes itself or that cannot be copied one by one
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "COMMENT", "HISTORY", "", "FILENAME"}
_SCI_KEYS = ("PHOTMJSR", "PHOTUJA2", "PIXAR_SR", "PIXAR_A2")


def cleaned_path(path, outdir, suffix: str) -> Path:
    """``outdir / name`` with the JWST suffix (``_cal``, ``_crf``, ``_1fc``) replaced by ``suffix``.

    ``jw..._nrcb5_cal.fits`` becomes ``jw..._nrcb5_crf.fits``; a name without one of those
    suffixes gets ``suffix`` before ``.fits``.
    """
    path = Path(path)
    stem = path.name[: -len(".fits")] if path.name.endswith(".fits") else path.stem
    for s in SUFFIXES:
        if stem.endswith(s):
            stem = stem[: -len(s)]
            break
    return Path(outdir) / f"{stem}{suffix}.fits"


def output_paths(paths, outdir, suffix: str, *, overwrite: bool) -> list[Path]:
    """The output files of ``paths``, checked before any work: outdir made, no clash, no overwrite."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        msg = f"{outdir}: exists and is not a directory; expected an output directory"
        raise InputError(msg)
    outs = [cleaned_path(p, outdir, suffix) for p in paths]
    seen: dict[Path, Path] = {}
    for p, o in zip(paths, outs, strict=True):
        if o in seen:
            msg = f"{p} and {seen[o]} would both be written to {o}; expected input files with different names"
            raise InputError(msg)
        seen[o] = Path(p)
        if Path(p).resolve() == o.resolve():
            msg = f"{p}: the output {o} is the input itself; choose another output directory"
            raise InputError(msg)
        if o.exists() and not overwrite:
            msg = f"{o}: exists; pass overwrite=True (--overwrite) to replace it"
            raise InputError(msg)
    outdir.mkdir(parents=True, exist_ok=True)
    return outs


def _meta(path: Path, status_key: str) -> dict:
    """Primary-header keywords (and the SCI photometric ones) of a cal file, for write_cal."""
    with fits.open(path, memmap=True) as hdul:
        prim = hdul[0].header
        meta = {k: prim[k] for k in prim if k not in _STRUCTURAL and not k.startswith("NAXIS")}
        sci = hdul["SCI"].header
        meta.update({k: sci[k] for k in _SCI_KEYS if k in sci})
    meta[status_key] = "COMPLETE"
    return meta


def write_cleaned(source, target, arrays: dict, *, status_key: str, keywords: dict | None = None) -> Path:
    """Write cleaned cal arrays of ``source`` to ``target`` (JWST cal layout, whole, then renamed).

    The primary header, the photometric keywords and the FITS (SIP) WCS of ``source`` are
    kept; ``status_key = 'COMPLETE'`` records the step as the JWST pipeline's ``S_*`` keywords
    do, and ``keywords`` (primary-header cards) what the step did. An ASDF extension (the exact
    gwcs of pipeline files) is not carried over.
    """
    source, target = Path(source), Path(target)
    wcs = read_wcs(source, prefer_gwcs=False)
    write_cal(target, wcs=wcs, meta={**_meta(source, status_key), **(keywords or {})}, overwrite=True, **arrays)
    log.info("wrote %s", target)
    return target


#: the arrays a per-exposure step receives, in this order
EXPOSURE_ARRAYS = ("sci", "err", "dq", "var_poisson", "var_rnoise", "var_flat", "good")


def read_inputs(paths, bad_bits, *, single_band: bool = False):
    """``(paths, bits, exposures)`` of a preprocessing step, checked: some given, none empty.

    ``single_band`` refuses a set that mixes filters (steps that compare exposures need one).
    """
    from mosaic.io.cal import bad_bits_from, good_fraction, read_exposures  # noqa: PLC0415

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        msg = "no exposures given; expected one or more _cal.fits files"
        raise InputError(msg)
    bits = bad_bits_from(bad_bits)
    exposures = read_exposures(paths, bad_bits=bits, single_band=single_band, check_data=False)
    for p in paths:
        if good_fraction(str(p), bits) == 0.0:
            msg = f"{p}: every pixel is NaN or flagged; expected an exposure with data (leave it out of the set)"
            raise InputError(msg)
    return paths, bits, exposures


def check_mesh(box_size, shape=None, *, least: int = 4, typical: str = "tens for real exposures") -> int:
    """A step's mesh side in pixels, checked: at least ``least`` (before any file is read) and,
    given the exposures' ``shape``, no larger than they are. Raises ValueError otherwise."""
    box = int(box_size)
    if box < least:
        msg = f"box_size {box_size!r} is too small; expected at least {least} pixels ({typical})"
        raise ValueError(msg)
    if shape is not None and box > min(shape):
        msg = f"box_size {box_size!r} is larger than the exposures ({shape[0]} x {shape[1]}); expected a mesh that fits"
        raise ValueError(msg)
    return box


def exposure_arrays(exposures, k: int) -> list:
    """Exposure ``k``'s lazy arrays, in the order of :data:`EXPOSURE_ARRAYS`."""
    return [exposures[v].data[k] for v in EXPOSURE_ARRAYS]
