"""The notebooks in notebooks/ run from top to bottom in a fresh kernel, and what they show holds.

Each notebook is executed with nbclient in the ``python3`` kernel of this environment (ipykernel),
with ``TMPDIR`` pointing at the test's temporary folder (the notebooks write everything under
``tempfile.mkdtemp()``), so the files they make are checked here too. A cell that raises fails the
test; so does a warning shown in a cell's output (the kernel's warnings are not pytest's, they
would only clutter the outputs). The notebooks are stored without outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 300  # seconds per cell

#: what a warning (``path:line: SomeWarning: message``) or a traceback looks like in an output
SHOWN_PROBLEM = re.compile(r"\b\w*Warning: |Traceback \(most recent call last\)")

#: stderr lines that are not the notebooks' doing, each with its reason
KNOWN_STDERR: tuple = ()


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _execute(path: Path, tmp_path: Path, monkeypatch) -> tuple[object, str]:
    """The executed notebook and the text of all its outputs, in order."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MOSAIC_PROGRESS", "0")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    texts, stderr = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                (stderr if out["name"] == "stderr" else texts).append(out["text"])
            elif out["output_type"] in ("execute_result", "display_data"):
                texts.append(out["data"].get("text/plain", ""))
    # a Python warning or traceback shown in an output (log lines of a busy cluster are let be)
    unexpected = [
        line for text in stderr for line in text.splitlines()
        if SHOWN_PROBLEM.search(line) and not any(p.search(line) for p in KNOWN_STDERR)
    ]
    assert not unexpected, f"{path.name} shows warnings:\n" + "\n".join(unexpected)
    return nb, "\n".join(texts)


def _one(pattern: str, tmp_path: Path) -> Path:
    found = sorted(tmp_path.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} under {tmp_path}; got {found}"
    return found[0]


def test_the_four_notebooks_are_there_and_stored_without_outputs():
    assert [p.name for p in _notebooks()] == ["fusion.ipynb", "monitoring.ipynb", "quickstart.ipynb", "survey.ipynb"]
    for path in _notebooks():
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), path.name


def test_quickstart(tmp_path, monkeypatch):
    from astropy.io import fits
    from astropy.table import Table

    _, text = _execute(NOTEBOOKS / "quickstart.ipynb", tmp_path, monkeypatch)

    # the report: outliers, drizzle and all of UPDC computed, the catalogue made; a re-run resumes
    assert re.search(r"F200W\s+updc\s+done\s+[\d.]+\s+updc: computed 0-5; from the store none", text)
    assert re.search(r"F200W\s+drizzle\s+done", text) and re.search(r"F200W\s+catalogs\s+done\s+[\d.]+\s+1 catalogues", text)
    assert "[('F200W', 'resumed')]" in text

    # UPDC narrows the close pair's blend with respect to the drizzle mosaic
    widths = dict(re.findall(r"(drizzle|UPDC iteration 5): width at half maximum along the pair ([\d.]+)", text))
    assert set(widths) == {"drizzle", "UPDC iteration 5"}
    assert float(widths["UPDC iteration 5"]) < float(widths["drizzle"])

    # every simulated star (and both stars of the pair) is in the catalogue
    for kind, n_matched, n_total in re.findall(r"(star|pair|galaxy)\s*: (\d+) of (\d+) matched", text):
        if kind != "galaxy":
            assert n_matched == n_total and int(n_total) > 0, (kind, n_matched, n_total)

    # the files the notebook wrote
    products = _one("mosaic-quickstart-*", tmp_path) / "products"
    i2d = products / "quickstart_f200w_updc_iter05_i2d.fits"
    assert fits.getheader(i2d, 0)["UPDCITER"] == 5
    assert fits.getdata(i2d, "SCI").shape == fits.getdata(products / "quickstart_f200w_drizzle_i2d.fits", "SCI").shape
    n_rows = int(re.search(r"(\d+) sources detected in UPDC iteration 5", text).group(1))
    assert n_rows > 0 and len(Table.read(products / "catalogs" / "quickstart_f200w_updc_iter05_cat.ecsv")) == n_rows


def test_monitoring(tmp_path, monkeypatch):
    _, text = _execute(NOTEBOOKS / "monitoring.ipynb", tmp_path, monkeypatch)

    # the dashboard answered during the run, on the port of the link shown
    link = re.search(r"dashboard: (http://\S+/status)", text).group(1)
    port = re.search(r":(\d+)/status", link).group(1)
    assert f"dashboard {link}: HTTP 200 while the run was going" in text
    assert f"through jupyter-server-proxy: /user/you/proxy/{port}/status" in text

    # the run on the cluster, its tasks and the performance report
    assert re.search(r"F200W\s+updc\s+done\s+[\d.]+\s+updc: computed 0-2", text)
    n_tasks, n_workers = map(int, re.search(r"(\d+) tasks on (\d+) workers", text).groups())
    assert n_tasks > 0 and n_workers == 2
    html = (_one("mosaic-monitoring-*", tmp_path) / "performance-report.html").read_text()
    assert "Task Stream" in html
    assert "cluster closed; client status: closed" in text


def test_survey(tmp_path, monkeypatch):
    from mosaic.io.store import Store

    _, text = _execute(NOTEBOOKS / "survey.ipynb", tmp_path, monkeypatch)
    tables = re.findall(r"survey: (\d)/2 field/band\(s\) complete.*?\n((?:.*\n){4})", text)
    statuses = [dict(re.findall(r"^(field_[ab])\s+F200W\s+(\w+)", rows, re.M)) for _, rows in tables]

    # first run, broken run, repaired run, the run that redoes nothing
    assert statuses == [
        {"field_a": "complete", "field_b": "complete"},
        {"field_a": "resumed", "field_b": "failed"},
        {"field_a": "resumed", "field_b": "complete"},
        {"field_a": "resumed", "field_b": "resumed"},
    ]
    assert re.search(r"1 failure\(s\):\n.*\n.*\nfield_b\s+F200W\s+drizzle\s+InputError: .*not a readable FITS file", text)
    assert re.search(r"F200W\s+updc\s+resumed\s+[\d.]+\s+updc: computed none; from the store 0-2", text)
    assert "steps by status in the last run: {'off': 12, 'resumed': 4}" in text

    # the store: both fields complete after the repair, products on disk
    work = _one("mosaic-survey-*", tmp_path)
    store = Store(work / "survey.zarr")
    for field in ("field_a", "field_b"):
        assert store.manifest(field, "F200W")["pipeline/run"]["status"] == "complete"
        assert store.is_complete(field, "F200W", "updc/iter_02")
        assert (work / "products" / field / f"{field}_f200w_updc_iter02_i2d.fits").is_file()


def test_fusion(tmp_path, monkeypatch):
    from astropy.io import fits

    _, text = _execute(NOTEBOOKS / "fusion.ipynb", tmp_path, monkeypatch)

    # at both positions the fused spectrum is closer to the truth than the IFU's
    spectra = re.findall(r"(jet knot|Titan cloud) at fine pixel .*: spectrum RMS error fused ([\d.]+) %, IFU ([\d.]+) %", text)
    assert [name for name, _, _ in spectra] == ["jet knot", "Titan cloud"]
    for name, fused, ifu in spectra:
        assert float(fused) < 0.5 * float(ifu), name
    # and so are the planes, by PSNR and SSIM, at three wavelengths
    planes = re.findall(r"PSNR fused ([\d.]+) dB, IFU ([\d.]+) dB; SSIM fused ([\d.]+), IFU ([\d.]+)", text)
    assert len(planes) == 3
    for psnr_f, psnr_i, ssim_f, ssim_i in planes:
        assert float(psnr_f) > float(psnr_i) and float(ssim_f) > float(ssim_i)

    # the file the notebook wrote: the fused cube at three times the IFU's sampling, with its spectral axis
    work = _one("mosaic-fusion-*", tmp_path)
    with fits.open(work / "fused.fits") as hdul:
        assert hdul["SCI"].data.shape == (60, 72, 72)
        assert hdul["SCI"].header["CTYPE3"] == "WAVE"
        assert hdul[0].header["FUSEMRNK"] >= 1
    assert fits.getdata(work / "scene" / "ifu_s3d.fits", "SCI").shape == (60, 24, 24)
