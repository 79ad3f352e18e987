"""Sky matching over the overlaps: the offsets found against the ones put in, and the mosaic's steps gone."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.cli import main
from mosaic.exceptions import NoOverlapWarning
from mosaic.ops.skymatch import sky_meshes, solve_offsets
from mosaic.prep.skymatch import match_skies
from mosaic.simulate.field import SimConfig, simulate_field

#: sky offsets put into the four exposures, as fractions of the simulated sky (0.15 MJy/sr)
FRACTIONS = np.array([0.0, 0.13, -0.05, 0.02])


@pytest.fixture(scope="module", params=["sky", "faint sky"])
def offset_field(request, tmp_path_factory):
    """Four dithered 256² exposures whose skies differ by known offsets: on the simulated sky with
    intracluster light, and on a sky of 0 without it (background-subtracted data: a third of the
    pixels negative)."""
    faint = request.param == "faint sky"
    root = tmp_path_factory.mktemp("skymatch")
    cfg = SimConfig(size=256, psf_size=51, n_exposures=4, seed=21, n_galaxies=20, n_stars=6, background=0.0 if faint else 0.15, icl=not faint)
    field = simulate_field(root / "field", cfg)
    negative = np.mean(fits.getdata(field.exposures[0], "SCI") < 0)
    assert negative > 0.3 if faint else negative == 0
    offsets = FRACTIONS * 0.15
    (root / "in").mkdir()
    shifted = []
    for path, o in zip(field.exposures, offsets, strict=True):
        dst = root / "in" / path.name
        shutil.copy(path, dst)
        with fits.open(dst, mode="update") as hdul:
            hdul["SCI"].data += np.float32(o)
        shifted.append(dst)
    return root, field.exposures, shifted, offsets


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9), seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 12),
    scale=st.sampled_from([1e-6, 1.0, 1e3]),
)
def test_offsets_of_exact_differences_are_the_truth_less_each_groups_mean(n, seed, extra, scale):
    """Differences of known offsets over random overlap graphs (several groups, repeated pairs,
    any weights): each group gets its offsets less their mean, an exposure in no pair 0."""
    rng = np.random.default_rng(seed)
    truth = scale * rng.normal(size=n)
    group_of = rng.integers(0, max(1, n // 2), n)
    pairs = []
    for g in np.unique(group_of):
        members = np.flatnonzero(group_of == g)
        for a, b in zip(members[:-1], members[1:], strict=True):  # a chain links the group
            pairs.append((a, b, truth[a] - truth[b], rng.uniform(0.1, 10.0)))
        for _ in range(extra if len(members) > 1 else 0):
            a, b = rng.choice(members, 2, replace=False)
            pairs.append((a, b, truth[a] - truth[b], rng.uniform(0.1, 10.0)))
    rng.shuffle(pairs)
    offsets, group = solve_offsets(n, pairs)
    for g in np.unique(group_of):
        members = np.flatnonzero(group_of == g)
        assert len(np.unique(group[members])) == 1
        want = truth[members] - truth[members].mean() if len(members) > 1 else np.zeros(1)
        np.testing.assert_allclose(offsets[members], want, rtol=0, atol=1e-9 * scale)


def test_bad_pairs_are_refused():
    with pytest.raises(ValueError, match=r"pair \(0, 0"):
        solve_offsets(2, [(0, 0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="a finite difference and a positive weight"):
        solve_offsets(2, [(0, 1, np.nan, 1.0)])
    with pytest.raises(ValueError, match="two different exposures of 2"):
        solve_offsets(2, [(0, 2, 1.0, 1.0)])


def test_sky_meshes_take_the_median_of_the_sky_around_sources():
    """A flat sky of 3 with noise, bright sources and bad pixels: the meshes measure 3, to their
    noise (a mesh with under a quarter of its pixels left is not measured)."""
    rng = np.random.default_rng(4)
    sci = 3.0 + rng.normal(0.0, 0.1, (128, 96))
    yy, xx = np.indices(sci.shape)
    for y, x in rng.uniform(0, 96, (12, 2)):
        sci += 50.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)
    good = rng.random(sci.shape) > 0.05
    sci[~good] = 1e6
    levels = sky_meshes(sci, good, 32)
    assert levels.shape == (4, 3)
    assert np.isfinite(levels).sum() >= 10
    np.testing.assert_allclose(levels[np.isfinite(levels)], 3.0, atol=0.02)  # 1.25 sigma / sqrt(~800) is 0.004
    assert np.isnan(sky_meshes(sci, np.zeros(sci.shape, bool), 32)).all()


def test_offsets_found_are_the_ones_put_in(offset_field, tmp_path):
    root, _, shifted, offsets = offset_field
    outs = match_skies(shifted, tmp_path, box_size=32)
    got = np.array([fits.getheader(p)["SKYMATCH"] for p in outs])
    want = offsets - offsets.mean()
    # measured: within 2e-4 MJy/sr (0.01 of the largest offset, 0.05 of a pixel's noise)
    np.testing.assert_allclose(got, want, rtol=0, atol=0.03 * np.abs(want).max())
    for src, out, o in zip(shifted, outs, got, strict=True):
        assert out.name.endswith("_skm.fits")
        a, b = fits.getdata(src, "SCI"), fits.getdata(out, "SCI")
        np.testing.assert_array_equal(b, (a.astype(np.float64) - o).astype(np.float32))  # NaN stays NaN
        np.testing.assert_array_equal(fits.getdata(src, "VAR_POISSON"), fits.getdata(out, "VAR_POISSON"))
        assert fits.getheader(out)["S_SKYMAT"] == "COMPLETE"


def test_the_mosaic_of_matched_exposures_has_no_steps(offset_field, tmp_path):
    """The drizzle is linear in SCI: the mosaic of the offset exposures less that of the originals
    is the weighted mean of the offsets, a step at each exposure's edge; with ``--skymatch`` it
    is one constant (the offsets' mean)."""
    root, originals, shifted, offsets = offset_field
    ref = tmp_path / "ref_i2d.fits"
    assert main(["drizzle", *map(str, originals), "--out", str(ref)]) == 0
    steps = {}
    for name, extra in (("plain", []), ("matched", ["--skymatch", "--skymatch-box", "32", "--prep-dir", str(tmp_path / "prep")])):
        out = tmp_path / f"{name}_i2d.fits"
        assert main(["drizzle", *map(str, shifted), "--out", str(out), *extra]) == 0
        diff = fits.getdata(out, "SCI") - fits.getdata(ref, "SCI")
        diff = diff[np.isfinite(diff)]
        steps[name] = (np.percentile(diff, 99) - np.percentile(diff, 1), float(np.median(diff)))
    assert steps["plain"][0] > 0.5 * (offsets.max() - offsets.min())
    assert steps["matched"][0] < 0.03 * (offsets.max() - offsets.min())
    assert steps["matched"][1] == pytest.approx(offsets.mean(), abs=0.03 * np.abs(offsets).max())
    assert len(list((tmp_path / "prep").glob("*_skm.fits"))) == 4


def test_an_exposure_sharing_no_sky_is_named_and_kept(offset_field, tmp_path):
    root, _, shifted, _ = offset_field
    far = tmp_path / "far_cal.fits"
    shutil.copy(shifted[3], far)
    with fits.open(far, mode="update") as hdul:
        hdul["SCI"].header["CRVAL2"] = hdul["SCI"].header["CRVAL2"] + 1.0  # a degree away
    with pytest.warns(NoOverlapWarning, match=r"1 of 4 exposures share no measured sky .*far_cal\.fits"):
        outs = match_skies([*shifted[:3], far], tmp_path / "out", box_size=32)
    assert fits.getheader(outs[3])["SKYMATCH"] == 0.0
    np.testing.assert_array_equal(fits.getdata(outs[3], "SCI"), fits.getdata(far, "SCI"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="box_size 2 is too small"):
            match_skies(shifted, tmp_path / "bad", box_size=2)


def test_the_command_writes_what_the_library_call_writes(offset_field, tmp_path, capsys):
    root, _, shifted, _ = offset_field
    assert main(["skymatch", *map(str, shifted), "--out", str(tmp_path / "cli"), "--box", "32", "--workers", "2"]) == 0  # forked workers
    want = match_skies(shifted, tmp_path / "lib", box_size=32)
    for w in want:
        got = tmp_path / "cli" / w.name
        np.testing.assert_array_equal(fits.getdata(got, "SCI"), fits.getdata(w, "SCI"))
        assert fits.getheader(got)["SKYMATCH"] == fits.getheader(w)["SKYMATCH"]
    assert main(["skymatch", *map(str, shifted), "--out", str(tmp_path / "cli"), "--box", "32"]) == 1
    assert "exists" in capsys.readouterr().err
