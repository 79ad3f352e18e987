"""FITS images read lazily by sections (equal to ``fits.getdata``) and written atomically, tile by tile."""

from __future__ import annotations

from unittest import mock

import dask.array as da
import numpy as np
import pytest
import zarr
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic.exceptions import InputError, MissingFileError
from mosaic.io import images
from mosaic.io.images import open_image, read_fits_image, write_fits_image


def _wcs(shape) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.16, -27.78]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cd = [[-8.6e-6, 1.1e-6], [1.1e-6, 8.6e-6]]
    return w


@pytest.fixture(scope="module")
def i2d(tmp_path_factory):
    """An _i2d-like file: SCI, ERR (big-endian float32), WHT, DQ (int16) of 97 x 131 with a WCS."""
    shape = (97, 131)
    rng = np.random.default_rng(5)
    header = _wcs(shape).to_header()
    header["BUNIT"] = "MJy/sr"
    sci = rng.normal(size=shape).astype(">f4")
    sci[3:9, 40:47] = np.nan
    hdus = [fits.PrimaryHDU(header=fits.Header([("FILTER", "F200W")]))]
    for name, data in (("SCI", sci), ("ERR", rng.uniform(0.5, 1.0, shape).astype(">f4")),
                       ("WHT", rng.uniform(0, 3, shape).astype(np.float32)), ("DQ", rng.integers(0, 4, shape).astype(np.int16))):
        hdus.append(fits.ImageHDU(data, header=header, name=name))
    path = tmp_path_factory.mktemp("images") / "x_i2d.fits"
    fits.HDUList(hdus).writeto(path)
    return path


def test_i2d_extensions_read_by_sections_equal_getdata(i2d):
    image = read_fits_image(i2d, tile=40)
    assert image.ext == "SCI" and image.band == "F200W"
    assert image.data.chunks == ((40, 40, 17), (40, 40, 40, 11))
    got = image.data.compute()
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, fits.getdata(i2d, "SCI"))
    for name in ("ERR", "WHT", "DQ"):
        np.testing.assert_array_equal(image.extension(name).compute(), fits.getdata(i2d, name))
    assert image.extension("DQ").dtype == np.int16
    assert image.extension("ERR", dtype=np.float64).dtype == np.float64
    assert image.extension("VAR_FLAT") is None
    assert image.data[3:3, 0:6].compute().shape == (0, 6)  # astropy's section drops the axes of an empty cut
    assert image.wcs.wcs.compare(WCS(fits.getheader(i2d, "SCI")).wcs)


@settings(max_examples=12, deadline=None)
@given(
    tile=st.integers(8, 70),
    y=st.tuples(st.integers(0, 96), st.integers(1, 97)),
    x=st.tuples(st.integers(0, 130), st.integers(1, 131)),
)
def test_any_window_on_any_tiling_equals_getdata(i2d, tile, y, x):
    """Awkward tilings (1 px, not dividing the image) and windows across chunk edges."""
    y0, y1 = min(y), max(y)
    x0, x1 = min(x), max(x)
    window = read_fits_image(i2d, ext="ERR", tile=tile).data[y0:y1, x0:x1].compute()
    np.testing.assert_array_equal(window, fits.getdata(i2d, "ERR")[y0:y1, x0:x1])


@pytest.mark.parametrize("band_rows", [1, 3, 1000])
def test_rows_read_in_bands_of_any_height_equal_getdata(i2d, monkeypatch, band_rows):
    """Whole rows read a band at a time, their columns cut out: bands of 1 row, of 3 (not dividing
    the chunks) and of more rows than the image has."""
    monkeypatch.setattr(images._FitsSection, "BAND_BYTES", band_rows * 131 * 4)
    got = read_fits_image(i2d, ext="ERR", tile=23).data
    np.testing.assert_array_equal(got.compute(), fits.getdata(i2d, "ERR"))
    np.testing.assert_array_equal(got[7:60, 100:131].compute(), fits.getdata(i2d, "ERR")[7:60, 100:131])


@settings(max_examples=25, deadline=None)
@given(
    band_rows=st.sampled_from([1, 2, 5, 1000]),
    y=st.tuples(st.integers(0, 96), st.integers(1, 97)),
    x=st.tuples(st.integers(0, 130), st.integers(1, 131)),
    steps=st.tuples(st.integers(1, 12), st.integers(1, 12)),
)
def test_strided_windows_read_in_bands_equal_getdata(i2d, band_rows, y, x, steps):
    """A strided sample (what noise measurements take) read in bands of whole rows, any band
    height against any stride, equals the same slice of the whole array."""
    y0, y1 = min(y), max(y)
    x0, x1 = min(x), max(x)
    key = (slice(y0, y1, steps[0]), slice(x0, x1, steps[1]))
    section = images._FitsSection(i2d, "ERR", (97, 131), np.float32)
    section.BAND_BYTES = band_rows * 131 * 4
    np.testing.assert_array_equal(section[key], fits.getdata(i2d, "ERR")[key])


def test_only_the_chunks_needed_are_read(i2d, monkeypatch):
    reads = []
    real = images._FitsSection.__getitem__

    def spy(self, key):
        out = real(self, key)
        reads.append(out.shape)
        return out

    monkeypatch.setattr(images._FitsSection, "__getitem__", spy)
    window = read_fits_image(i2d, tile=32).data[5:10, 70:80].compute()
    # one chunk touched, and no more of it read than it holds (dask may read the window alone)
    assert len(reads) == 1 and reads[0][0] * reads[0][1] <= 32 * 32
    np.testing.assert_array_equal(window, fits.getdata(i2d, "SCI")[5:10, 70:80])


def test_scaled_integer_image_is_read_as_getdata(tmp_path):
    hdu = fits.PrimaryHDU(np.arange(60 * 50, dtype=np.float64).reshape(60, 50) * 0.5 - 100.0)
    hdu.scale("int16", bscale=0.5, bzero=600.0)
    hdu.writeto(tmp_path / "scaled.fits")
    got = read_fits_image(tmp_path / "scaled.fits", tile=16).data.compute()
    np.testing.assert_array_equal(got, fits.getdata(tmp_path / "scaled.fits"))


def test_plain_image_is_the_first_2d_hdu_and_zarr_is_read(tmp_path):
    data = np.random.default_rng(2).normal(size=(30, 20))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 3, 4))), fits.ImageHDU(data)]).writeto(tmp_path / "p.fits")
    image = read_fits_image(tmp_path / "p.fits", tile=8)
    assert image.ext == 2 and image.band is None and image.wcs is None
    np.testing.assert_array_equal(image.data.compute(), data)
    stored = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, chunks=(7, 9), dtype=data.dtype)
    stored[...] = data
    lazy = open_image(tmp_path / "a.zarr")
    assert isinstance(lazy, da.Array) and lazy.chunks[0][0] == 7
    np.testing.assert_array_equal(lazy.compute(), data)


def test_bad_input_names_the_file_and_what_was_expected(tmp_path, i2d):
    missing = tmp_path / "nothere.fits"
    with pytest.raises(MissingFileError, match="nothere.fits: no such image"):
        read_fits_image(missing)
    with pytest.raises(FileNotFoundError):  # also what callers catching OSError expect
        open_image(missing)
    with pytest.raises(InputError, match=r"x_i2d.fits: no extension 'BKG'; expected one of \['PRIMARY', 'SCI'"):
        read_fits_image(i2d, ext="BKG")
    fits.PrimaryHDU(np.zeros((2, 3, 4))).writeto(tmp_path / "cube.fits")
    with pytest.raises(InputError, match="cube.fits: no 2-D image"):
        read_fits_image(tmp_path / "cube.fits")
    with pytest.raises(InputError, match=r"cube.fits\[0\]: not a 2-D image \(NAXIS=3\)"):
        read_fits_image(tmp_path / "cube.fits", ext=0)
    (tmp_path / "text.fits").write_text("not fits at all")
    with pytest.raises(InputError, match="text.fits: cannot be read as FITS"):
        read_fits_image(tmp_path / "text.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 5)), name="SCI"), fits.ImageHDU(np.zeros((4, 6)), name="ERR")]).writeto(
        tmp_path / "mixed.fits")
    with pytest.raises(InputError, match=r"mixed.fits\[ERR\]: shape \(4, 6\) differs from SCI \(4, 5\)"):
        read_fits_image(tmp_path / "mixed.fits").extension("ERR")


def test_write_round_trips_data_header_wcs_and_dtypes(tmp_path, i2d):
    source = read_fits_image(i2d, tile=40)
    mask = source.data > 1.0
    out = write_fits_image(
        tmp_path / "o.fits",
        {"SCI": source.data * 2, "MASK": mask.astype(np.uint8), "FLAG": mask, "HALF": source.data.astype(np.float16)},
        header=source.header, primary=source.primary, history=["made by a test"],
    )
    want = fits.getdata(i2d, "SCI")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "MASK", "FLAG", "HALF"]
        np.testing.assert_array_equal(hdul["SCI"].data, want * 2)
        assert hdul["MASK"].data.dtype == np.uint8 and hdul["FLAG"].data.dtype.newbyteorder("=") == np.int32
        np.testing.assert_array_equal(hdul["FLAG"].data, want > 1.0)
        assert hdul["HALF"].data.dtype.newbyteorder("=") == np.float32
        assert hdul[0].header["FILTER"] == "F200W" and "made by a test" in str(hdul[0].header["HISTORY"])
        for h in hdul[1:]:
            assert h.header["BUNIT"] == "MJy/sr"
            assert WCS(h.header).wcs.compare(source.wcs.wcs, tolerance=1e-12)
    # a WCS given alone, on an in-memory array
    w = _wcs((10, 12))
    out2 = write_fits_image(tmp_path / "w.fits", {"SEGM": np.arange(120, dtype=np.int32).reshape(10, 12)}, wcs=w)
    assert WCS(fits.getheader(out2, "SEGM")).wcs.compare(w.wcs, tolerance=1e-12)
    np.testing.assert_array_equal(fits.getdata(out2, "SEGM"), np.arange(120).reshape(10, 12))


def test_write_is_tile_by_tile(tmp_path, monkeypatch):
    seen = []
    real = images._FitsImageTarget.__setitem__

    def spy(self, key, value):
        seen.append(np.shape(value))
        return real(self, key, value)

    monkeypatch.setattr(images._FitsImageTarget, "__setitem__", spy)
    data = da.random.default_rng(3).normal(size=(50, 70), chunks=(16, 24))
    write_fits_image(tmp_path / "t.fits", {"SCI": data})
    assert len(seen) == 4 * 3 and max(a * b for a, b in seen) <= 16 * 24
    np.testing.assert_array_equal(fits.getdata(tmp_path / "t.fits", "SCI"), data.compute())


def test_write_is_atomic(tmp_path):
    path = tmp_path / "keep.fits"
    path.write_text("keep me")
    ok = da.zeros((20, 20), chunks=10)
    with pytest.raises(FileExistsError, match="keep.fits: exists; pass overwrite=True"):
        write_fits_image(path, {"SCI": ok})

    def boom(block):
        raise RuntimeError("tile failed")

    broken = ok.map_blocks(boom, dtype=ok.dtype)
    with pytest.raises(RuntimeError, match="tile failed"):
        write_fits_image(path, {"SCI": ok, "BAD": broken}, overwrite=True)
    assert path.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.fits"], "no temporary file is left behind"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_fits_image(tmp_path / "no" / "dir.fits", {"SCI": ok})


@settings(max_examples=15, deadline=None)
@given(
    ny=st.integers(1, 37), nx=st.integers(1, 41), cy=st.integers(1, 17), cx=st.integers(1, 17),
    other=st.tuples(st.integers(1, 23), st.integers(1, 23)),
)
def test_extensions_of_equal_tiles_are_written_by_one_task_per_tile(tmp_path_factory, ny, nx, cy, cx, other):
    """Extensions with the same blocks (the planes of one stacked array, as a UPDC iterate's) are
    written by one task per block; one with other blocks by tasks of its own, an in-memory one
    whole. Every extension equals its array on any tiling."""
    rng = np.random.default_rng(ny * 53 + nx)
    stack = da.from_array(rng.normal(size=(3, ny, nx)).astype("f4"), chunks=(3, cy, cx))
    odd = da.from_array(rng.integers(0, 9, size=(ny, nx)).astype("i4"), chunks=other)
    plain = rng.normal(size=(ny, nx))
    images_in = {"SCI": stack[0], "ERR": stack[1], "WHT": stack[2], "CON": odd, "VAR": plain}
    calls = []
    real = images._write_tiles

    def spy(*blocks, targets, block_info=None):
        calls.append(len(blocks))
        return real(*blocks, targets=targets, block_info=block_info)

    with mock.patch.object(images, "_write_tiles", spy):
        out = write_fits_image(tmp_path_factory.mktemp("w") / "t.fits", images_in)
    # one write per block of each distinct tiling (the integer image's may be the planes'),
    # each writing every extension of that tiling
    tilings = {}
    for name, a in images_in.items():
        tilings.setdefault(da.asarray(a).chunks, []).append(name)
    assert sorted(calls) == sorted(len(names) for c, names in tilings.items() for _ in range(len(c[0]) * len(c[1])))
    with fits.open(out) as hdul:
        for name, a in images_in.items():
            np.testing.assert_array_equal(hdul[name].data, np.asarray(a))


def test_a_tile_compressed_image_is_read_as_its_data(tmp_path):
    """A Rice tile-compressed SCI (fpack's kind; astropy 7 makes it an ImageHDU whose NAXISn are
    the uncompressed image's) reads lazily as astropy decompresses it, not refused as truncated;
    a compressed file cut short is still one error naming it."""
    rng = np.random.default_rng(3)
    data = rng.normal(5.0, 1.0, (300, 257)).astype(np.float32)
    path = tmp_path / "comp.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, name="SCI")]).writeto(path)
    got = read_fits_image(path, tile=128)
    np.testing.assert_array_equal(np.asarray(got.data), fits.getdata(path, "SCI"))
    assert np.abs(np.asarray(got.data) - data).max() < 0.05  # Rice's float quantisation
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.fits"):
        np.asarray(read_fits_image(cut, tile=128).data)
