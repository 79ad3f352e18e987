"""Training (a few steps of a tiny model, resumable) and the ONNX export, where PyTorch is installed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training and export need PyTorch (the 'train' extra); inference tests run without it")
pytest.importorskip("onnx", reason="the export needs onnx (the 'train' extra)")

from mosaic.restore.infer import RestorationModel  # noqa: E402
from mosaic.restore.model import RestormerConfig, build_model  # noqa: E402

TINY = RestormerConfig(dim=4, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement=1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Three synthetic pairs: blurred, noisy point sources on a sky (input) and sharper ones (target)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    arrays = {}
    for k in range(3):
        t = np.zeros((80, 80), np.float32)
        for _ in range(25):
            t[rng.integers(80), rng.integers(80)] += rng.uniform(1, 20)
        t = gaussian_filter(t, 1.0)
        arrays[f"target_{k}"] = t
        arrays[f"input_{k}"] = (gaussian_filter(t, 2.5) + 0.1 + rng.normal(0, 0.01, t.shape)).astype(np.float32)
    path = tmp_path_factory.mktemp("pairs") / "pairs.npz"
    np.savez(path, seeds=np.arange(3), sky=np.full(3, 0.1), sigma=np.full(3, 0.01), band="F200W",
             pixel_scale_arcsec=0.0155, reference_fwhm_px=2.0, **arrays)
    return path


def test_training_decreases_loss_and_resumes_identically(pairs, tmp_path):
    from mosaic.restore.train import train

    kw = {"config": TINY, "steps": 16, "batch": 4, "patch": 32, "lr": 3e-3, "seed": 5, "checkpoint_every": 8, "log_every": 8}
    h = train(pairs, tmp_path / "a", **kw)
    assert np.mean(h["loss"][-4:]) < 0.9 * np.mean(h["loss"][:4])
    assert h["val_loss"][-1] < h["val_loss"][0]
    # stopped after 8 steps and resumed to 16: the same losses and weights as one run
    b = tmp_path / "b"
    first = train(pairs, b, **kw, stop_at=8)
    assert first["step"] == list(range(1, 9))
    resumed = train(pairs, b, **kw)
    assert resumed["loss"] == h["loss"]
    final_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    final_b = torch.load(b / "checkpoint.pt", weights_only=False)["model"]
    for key in final_a:
        torch.testing.assert_close(final_a[key], final_b[key], rtol=0, atol=0)


def test_onnx_equals_pytorch(tmp_path):
    from mosaic.restore.export import export_onnx

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    for p in model.parameters():  # a non-trivial network: perturb the identity-like initialisation
        p.data += 0.05 * torch.randn_like(p)
    ckpt = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "config": TINY.to_dict(), "history": {"val_loss": []}, "steps": 0, "batch": 1,
                "patch": 32, "lr": 0.0, "weight_decay": 0.0, "seed": 0, "n_fields": 0, "data_seeds": [], "band": "F200W",
                "pixel_scale_arcsec": 0.0155, "reference_fwhm_px": 2.0}, ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        path = export_onnx(ckpt, tmp_path / "m.onnx")
    onnx_model = RestorationModel(path)
    assert (onnx_model.band, onnx_model.pixel_scale_arcsec, onnx_model.multiple) == ("F200W", 0.0155, 8)
    x = np.random.default_rng(1).normal(size=(72, 104)).astype(np.float32)
    x[30:34, 50:54] += 8.0
    with torch.no_grad():
        want = model(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    got = onnx_model.run(x)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.abs(want - x).max() > 0.01
