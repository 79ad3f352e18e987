"""A finished file put in place of an older one: atomically, the older one removed, no name left."""

import os

import pytest

from mosaic.io.replace import replace_file, wait_for_removals


def test_replaces_and_removes_the_old_file(tmp_path):
    final, tmp = tmp_path / "mosaic_i2d.fits", tmp_path / "mosaic_i2d.fits.tmp"
    final.write_bytes(b"old" * 1000)
    tmp.write_bytes(b"new")
    with open(final, "rb") as reader:  # a reader of the old file keeps reading it
        assert replace_file(tmp, final) == final
        assert final.read_bytes() == b"new" and not tmp.exists()
        assert reader.read() == b"old" * 1000
    wait_for_removals()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic_i2d.fits"]


def test_a_new_name(tmp_path):
    tmp = tmp_path / "a.tmp"
    tmp.write_bytes(b"x")
    replace_file(tmp, tmp_path / "a.fits")
    wait_for_removals()
    assert [p.name for p in tmp_path.iterdir()] == ["a.fits"]


def test_without_hard_links_it_replaces_in_place(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    final, tmp = tmp_path / "b.fits", tmp_path / "b.tmp"
    final.write_bytes(b"old")
    tmp.write_bytes(b"new")
    replace_file(tmp, final)
    wait_for_removals()
    assert final.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["b.fits"]


def test_a_missing_temporary_file_is_an_error_and_keeps_the_old_one(tmp_path):
    final = tmp_path / "c.fits"
    final.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        replace_file(tmp_path / "missing.tmp", final)
    wait_for_removals()
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.fits"]
