"""Training (a few steps of a tiny model, resumable) and the ONNX export, where PyTorch is installed."""

from __future__ import annotations

import json
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


def test_training_with_injected_sources_resumes_identically(pairs, tmp_path):
    """With smooth sources injected into every patch (random draws of their own), a stopped and resumed run
    is the same run, and the training patches differ from those without injection."""
    from mosaic.restore.train import train

    cfg = RestormerConfig(dim=4, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement=1, linear_kernel=5)
    kw = {"config": cfg, "steps": 6, "batch": 2, "patch": 32, "lr": 3e-3, "seed": 2, "checkpoint_every": 3, "log_every": 3}
    whole = train(pairs, tmp_path / "a", **kw, blob_fraction=1.0)
    train(pairs, tmp_path / "b", **kw, blob_fraction=1.0, stop_at=3)
    resumed = train(pairs, tmp_path / "b", **kw, blob_fraction=1.0)
    assert resumed["loss"] == whole["loss"]
    plain = train(pairs, tmp_path / "c", **kw)
    assert plain["loss"] != whole["loss"]
    assert np.isfinite(whole["loss"]).all()


@pytest.mark.parametrize(("linear_kernel", "faint_kernel"), [(0, 0), (5, 0), (5, 9)])
def test_onnx_equals_pytorch(tmp_path, linear_kernel, faint_kernel):
    from dataclasses import replace

    from mosaic.restore.export import export_onnx

    torch.manual_seed(0)
    cfg = replace(TINY, linear_kernel=linear_kernel, faint_kernel=faint_kernel, faint_rank=3)
    model = build_model(cfg).eval()
    for p in model.parameters():  # a non-trivial network: perturb the identity-like initialisation
        p.data += 0.05 * torch.randn_like(p)
    if linear_kernel:
        model.set_kernel(torch.rand(linear_kernel, linear_kernel) / 12.5)
    if faint_kernel:
        model.set_faint_kernel(np.random.default_rng(2).random((faint_kernel, faint_kernel)) / 40)
    ckpt = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "history": {"val_loss": []}, "steps": 0, "batch": 1,
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


def test_linear_kernel_fit_recovers_a_known_kernel():
    """Targets made by a known kernel (sum 1) from noisy inputs with sources: the fit returns that kernel."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import fftconvolve

    from mosaic.restore.linear import fit_linear_kernel

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[-3:4, -3:4]
    want = np.exp(-0.5 * (yy**2 + xx**2) / 1.2**2) - 0.3 * np.exp(-0.5 * (yy**2 + xx**2) / 2.5**2) + 0.02 * rng.normal(size=yy.shape)
    want /= want.sum()
    inputs, targets, skies = [], [], []
    for k in range(3):
        # white noise (every frequency present, so the kernel is determined) and smooth sources
        d = rng.normal(size=(90, 110)) + gaussian_filter(rng.exponential(size=(90, 110)) ** 4, 2.0)
        # sky in a border as wide as the kernel's reach: the fit's sums run over every lag, the convolution
        # then stays inside the image and the least-squares solution is exact
        d[:3], d[-3:], d[:, :3], d[:, -3:] = 0, 0, 0, 0
        sky = 0.1 * k
        inputs.append(d + sky)
        targets.append(fftconvolve(d, want, mode="same"))
        skies.append(sky)
    got = fit_linear_kernel(inputs, targets, skies, size=7, ridge=0.0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_linear_base_bounds_the_correction_on_bright_sources():
    """However wrong the network, a flat region (where the linear base equals the input, whatever the gate) moves
    by at most correction_max / (1 + (u / bright_u)^4) in asinh units: 2.2 % of the flux at u = 9."""
    cfg = RestormerConfig(dim=4, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement=1, linear_kernel=5)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    for p in model.parameters():
        p.data += 2.0 * torch.randn_like(p)
    model.set_kernel(torch.full((5, 5), 1 / 25))
    for u0 in (3.0, 6.0, 9.0):
        x = torch.full((1, 1, 48, 48), u0)
        x[..., 20:28, 20:28] += 0.05  # a slight bump: the network sees structure
        with torch.no_grad():
            out = model(x)[0, 0, 4:16, 4:16]  # flat in a 5 x 5 box around every pixel here
        bound = cfg.correction_max / (1 + (u0 / cfg.bright_u) ** 4)
        assert float((out - u0).abs().max()) <= bound + 1e-5
        assert float((out - u0).abs().max()) > 0.05 * bound  # the network is not silent


def test_wiener_kernel_maps_the_psf_to_the_reference():
    """Towards a wider reference nothing is lost to noise: with a tiny lambda, W * psf = reference (point-sampled
    Gaussians of sigma 1.6 and 2.4 px). Towards a narrower one W sums to 1 and sharpens (its peak above the psf's)."""
    from scipy.signal import fftconvolve

    from mosaic.restore.linear import wiener_kernel

    def gauss(sigma, size=41):
        r = np.arange(size) - size // 2
        g = np.exp(-0.5 * (r / sigma) ** 2)
        return np.outer(g, g) / np.outer(g, g).sum()

    psf = gauss(1.6) * (1 + 0.1 * np.random.default_rng(4).random((41, 41)))  # not symmetric
    psf /= psf.sum()
    w = wiener_kernel(psf, gauss(2.4), 1e-12, size=41)
    np.testing.assert_allclose(fftconvolve(psf, w, mode="same"), gauss(2.4), atol=2e-6)
    sharp = wiener_kernel(psf, gauss(0.8), 1e-2, size=41)
    assert sharp.sum() == pytest.approx(1.0)
    assert fftconvolve(psf, sharp, mode="same").max() > 1.5 * psf.max()
    with pytest.raises(ValueError, match="lam > 0"):
        wiener_kernel(psf, gauss(0.8), 0.0)


def test_separable_factors_rebuild_the_kernel():
    """A sum of r outer products is rebuilt exactly at rank r; the shipped Wiener filter to 1e-4 of its peak at rank 8."""
    from mosaic.restore.augment import drizzle_psf
    from mosaic.restore.data import reference_psf
    from mosaic.restore.linear import separable_factors, wiener_kernel

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 11)), rng.normal(size=(3, 11))
    k = np.einsum("ki,kj->ij", a, b)
    cols, rows = separable_factors(k, 3)
    np.testing.assert_allclose(np.einsum("ki,kj->ij", cols, rows), k, atol=1e-12)
    w = wiener_kernel(drizzle_psf("F200W", 0.0155, 0.5), reference_psf(2.0), 0.01, size=61)
    cols, rows = separable_factors(w, 8)
    assert np.abs(np.einsum("ki,kj->ij", cols, rows) - w).max() < 1e-3 * w.max()


def test_faint_base_mix_equals_its_definition():
    """With the output layer at zero (a reset head) the model is its bases' gated mix, computed here with SciPy:
    asinh(Wf * y + g (K * y - Wf * y)), y = sinh(u), g = sigmoid(gate_slope (u - gate_u))."""
    from scipy.signal import convolve2d

    cfg = RestormerConfig(dim=4, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement=1, linear_kernel=5, faint_kernel=9,
                          faint_rank=9, gate_u=2.0)
    rng = np.random.default_rng(6)
    k, wf = rng.random((5, 5)), rng.random((9, 9)) - 0.3
    k, wf = k / k.sum(), wf / wf.sum()
    model = build_model(cfg).eval()
    model.set_kernel(k)
    model.set_faint_kernel(wf)
    torch.nn.init.zeros_(model.output.weight)
    u = rng.normal(size=(40, 48)) + 4 * (rng.random((40, 48)) > 0.95)
    with torch.no_grad():
        got = model(torch.from_numpy(u.astype(np.float32))[None, None]).numpy()[0, 0]
    y = np.sinh(u)
    base, faint = convolve2d(y, k, mode="same"), convolve2d(y, wf, mode="same")
    g = 1 / (1 + np.exp(-cfg.gate_slope * (u - cfg.gate_u)))
    np.testing.assert_allclose(got, np.arcsinh(faint + g * (base - faint)), atol=2e-4)


def test_fine_tuning_with_a_new_faint_base_keeps_the_network_and_resets_the_head(pairs, tmp_path):
    """``init`` from a checkpoint without the faint base, ``reset_head``, learning rate 0: the network's weights
    are the checkpoint's, the output layer is zero, and the faint base is the Wiener filter from the drizzle PSF
    (turned by 180 degrees, as conv2d correlates); a checkpoint of another network size is refused."""
    from dataclasses import replace

    from mosaic.restore.augment import drizzle_psf
    from mosaic.restore.data import PSR, reference_psf
    from mosaic.restore.linear import wiener_kernel
    from mosaic.restore.train import train

    cfg = RestormerConfig(dim=4, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement=1, linear_kernel=5)
    kw = {"steps": 2, "batch": 2, "patch": 32, "seed": 3, "checkpoint_every": 2, "log_every": 2}
    train(pairs, tmp_path / "a", config=cfg, lr=3e-3, **kw)
    new = replace(cfg, faint_kernel=21, faint_rank=21, gate_u=4.0)
    train(pairs, tmp_path / "b", config=new, lr=0.0, init=tmp_path / "a" / "checkpoint.pt", reset_head=True, **kw)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        if key == "output.weight":
            assert float(a[key].abs().max()) > 0
            assert float(b[key].abs().max()) == 0
        else:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    want = wiener_kernel(drizzle_psf("F200W", 0.0155, PSR), reference_psf(2.0), new.faint_lambda, size=21)[::-1, ::-1]
    got = torch.einsum("ki,kj->ij", b["faint_columns"][:, 0, :, 0], b["faint_rows"][:, 0, 0, :]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="bases and bounds aside"):
        train(pairs, tmp_path / "c", config=replace(new, dim=8, heads=(2, 4, 8, 16)), lr=0.0, init=tmp_path / "a" / "checkpoint.pt", **kw)


def test_checkpoint_from_onnx_rebuilds_the_trained_network(tmp_path):
    """Export with another gate and bound, read the ONNX back: the weights are the checkpoint's exactly, the config
    is the one trained with, and re-exported with the same bound the model equals the first export (ONNX Runtime)."""
    from dataclasses import replace

    from mosaic.restore.export import checkpoint_from_onnx, export_onnx

    torch.manual_seed(1)
    cfg = replace(TINY, linear_kernel=5, faint_kernel=9, faint_rank=3, correction_max=1.5)
    model = build_model(cfg).eval()
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    model.set_kernel(torch.rand(5, 5) / 12.5)
    model.set_faint_kernel(np.random.default_rng(3).random((9, 9)) / 40)
    ckpt = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "history": {"val_loss": [0.25]}, "steps": 4, "batch": 1,
                "patch": 32, "lr": 0.0, "weight_decay": 0.0, "seed": 0, "n_fields": 0, "data_seeds": [], "band": "F200W",
                "pixel_scale_arcsec": 0.0155, "reference_fwhm_px": 2.0}, ckpt)
    bound = {"correction_max": 0.15, "gate_u": 5.0, "gate_slope": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = export_onnx(ckpt, tmp_path / "a.onnx", bound=bound)
        rebuilt = checkpoint_from_onnx(first, tmp_path / "r.pt")
        again = export_onnx(rebuilt, tmp_path / "b.onnx", bound=bound)
    state = torch.load(rebuilt, weights_only=False)
    assert state["config"] == cfg.to_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(state["model"][key], value, rtol=0, atol=0)
    a, b = RestorationModel(first), RestorationModel(again)
    assert json.loads(a.metadata["config"])["gate_u"] == 5.0
    x = np.random.default_rng(4).normal(size=(64, 80)).astype(np.float32)
    x[20:24, 30:34] += 7.0
    np.testing.assert_array_equal(a.run(x), b.run(x))
    with torch.no_grad():  # the exported gate is the one asked for, not the trained one
        want = build_model(replace(cfg, **bound)).eval()
        want.load_state_dict(model.state_dict())
        np.testing.assert_allclose(a.run(x), want(torch.from_numpy(x)[None, None]).numpy()[0, 0], atol=1e-4, rtol=0)
