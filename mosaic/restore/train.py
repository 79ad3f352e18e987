"""Train the restoration model: ``python -m mosaic.restore.train --data PAIRS.npz --out DIR``.

Patches are drawn (seeded) from the pairs of :mod:`mosaic.restore.data` where the input is
covered, put through the global transform of :mod:`mosaic.restore.normalise` (each field's own sky
and sigma, as inference does), and the model learns the target in that space with an L1 loss over
covered pixels, AdamW and a cosine learning rate. Every ``--checkpoint-every`` steps the model,
optimiser, schedule and random state are saved to ``DIR/checkpoint.pt``; a run finds it there and
resumes where it stopped (the same seed gives the same run, interrupted or not). Losses are
logged. The last field of the cache is held out for a validation loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mosaic.restore.data import build_dataset, load_dataset
from mosaic.restore.model import DEFAULT_CONFIG, MULTIPLE, SEED_CONFIG, RestormerConfig, build_model
from mosaic.restore.normalise import Normalisation

__all__ = ["PatchSampler", "train", "main"]

log = logging.getLogger("mosaic.restore.train")


class PatchSampler:
    """Seeded random patches (input, target, mask) in network space from a list of pairs."""

    def __init__(self, inputs, targets, skies, sigmas, *, patch: int, rng: np.random.Generator, min_cover: float = 0.9,
                 bright_fraction: float = 0.5, bright: float = 2.0, blobs=None, blob_fraction: float = 0.0):
        self.patch, self.rng, self.bright_fraction = patch, rng, bright_fraction
        self.blobs, self.blob_fraction = blobs, blob_fraction
        self.x, self.y, self.m, self.starts, self.bright = [], [], [], [], []
        for inp, tgt, sky, sigma in zip(inputs, targets, skies, sigmas, strict=True):
            norm = Normalisation(float(sky), float(sigma))
            covered = np.isfinite(inp)
            self.x.append(norm.forward(inp))
            # the target has no sky: its transform is taken about zero with the input's scale
            self.y.append(np.arcsinh(tgt / norm.scale).astype(np.float32))
            self.m.append(covered.astype(np.float32))
            # top-left corners (every 4 pixels) of patches covered to at least min_cover
            frac = self._window_sum(covered, patch) / patch**2
            ys, xs = np.nonzero(frac[::4, ::4] >= min_cover)
            self.starts.append(np.stack([ys * 4, xs * 4], 1))
            # sources are rare: a share of the patches is drawn among those holding a bright target pixel
            hit = self._window_sum(self.y[-1] > bright, patch)[ys * 4, xs * 4] > 0
            self.bright.append(self.starts[-1][hit])
        weights = np.array([len(s) for s in self.starts], float)
        if not weights.sum():
            msg = f"no {patch}x{patch} patch is covered to {min_cover:.0%} in any field; expected larger fields"
            raise ValueError(msg)
        self.p = weights / weights.sum()

    @staticmethod
    def _window_sum(mask, patch):
        c = np.pad(np.cumsum(np.cumsum(mask, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
        return c[patch:, patch:] - c[:-patch, patch:] - c[patch:, :-patch] + c[:-patch, :-patch]

    def batch(self, n: int):
        xs, ys, ms = [], [], []
        for f in self.rng.choice(len(self.starts), size=n, p=self.p):
            pool = self.bright[f] if len(self.bright[f]) and self.rng.random() < self.bright_fraction else self.starts[f]
            y0, x0 = pool[self.rng.integers(len(pool))]
            s = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
            x, y, m = self.x[f][s], self.y[f][s], self.m[f][s]
            if self.blobs is not None and self.rng.random() < self.blob_fraction:
                # smooth sources of any brightness, added in linear units (mosaic.restore.augment)
                xl, yl = np.sinh(x.astype(np.float64)), np.sinh(y.astype(np.float64))
                self.blobs.add(xl, yl, self.rng)
                x = np.where(m > 0, np.arcsinh(xl), x).astype(np.float32)
                y = np.arcsinh(yl).astype(np.float32)
            xs.append(x)
            ys.append(y)
            ms.append(m)
        return tuple(torch.from_numpy(np.stack(a)[:, None]) for a in (xs, ys, ms))


def _masked_l1(pred, target, mask):
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp(min=1.0)


def train(data, out, *, config: RestormerConfig, steps: int, batch: int = 8, patch: int = 64, lr: float = 1e-3,
          weight_decay: float = 1e-4, seed: int = 0, checkpoint_every: int = 50, log_every: int = 10,
          n_val: int = 16, stop_at: int | None = None, blob_fraction: float = 0.0, init=None, reset_head: bool = False) -> dict:
    """Train (or resume) a model on the pairs cache ``data``; write ``out/checkpoint.pt``. Returns the history.

    ``blob_fraction`` of the training patches get 1-3 smooth sources of random brightness added
    (:mod:`mosaic.restore.augment`); the validation patches none. ``init``: a checkpoint of the
    same network size whose weights (not its optimiser or schedule, nor its fixed bases) a new run
    starts from (fine-tuning); ``reset_head`` zeroes its output layer first.

    ``stop_at`` ends the run after that step (checkpointed; the schedule still spans ``steps``):
    a later call resumes it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if patch % MULTIPLE:
        msg = f"patch {patch!r} is not a multiple of {MULTIPLE}; expected one"
        raise ValueError(msg)
    pairs = load_dataset(data)
    n = len(pairs["inputs"])
    if n < 2:
        msg = f"{data}: {n} field(s); expected at least 2 (one is held out for validation)"
        raise ValueError(msg)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    blobs = None
    if blob_fraction > 0:
        from mosaic.restore.augment import BlobBank, drizzle_psf  # noqa: PLC0415
        from mosaic.restore.data import PSR  # noqa: PLC0415

        blobs = BlobBank(drizzle_psf(pairs["band"], pairs["pixel_scale_arcsec"], PSR), pairs["reference_fwhm_px"], seed=seed)
    sampler = PatchSampler(pairs["inputs"][:-1], pairs["targets"][:-1], pairs["sky"][:-1], pairs["sigma"][:-1], patch=patch, rng=rng,
                           blobs=blobs, blob_fraction=blob_fraction)
    val = PatchSampler(pairs["inputs"][-1:], pairs["targets"][-1:], pairs["sky"][-1:], pairs["sigma"][-1:], patch=patch,
                       rng=np.random.default_rng([seed, 1])).batch(n_val)
    model = build_model(config)
    if config.linear_kernel:  # the fixed linear base, from the training fields (the held-out one left out)
        from mosaic.restore.linear import fit_linear_kernel  # noqa: PLC0415

        model.set_kernel(fit_linear_kernel(pairs["inputs"][:-1], pairs["targets"][:-1], pairs["sky"][:-1], size=config.linear_kernel))
    if config.faint_kernel:  # the fixed faint base: the Wiener filter from the drizzle PSF to the reference PSF
        from mosaic.restore.augment import drizzle_psf  # noqa: PLC0415
        from mosaic.restore.data import PSR, reference_psf  # noqa: PLC0415
        from mosaic.restore.linear import wiener_kernel  # noqa: PLC0415

        model.set_faint_kernel(wiener_kernel(drizzle_psf(pairs["band"], pairs["pixel_scale_arcsec"], PSR),
                                             reference_psf(pairs["reference_fwhm_px"]), config.faint_lambda, size=config.faint_kernel))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.01)
    history = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    ckpt = out / "checkpoint.pt"
    start = 0
    if init is not None and not ckpt.exists():
        first = torch.load(init, weights_only=False)
        # the fixed bases and the bounds may differ (they are not learned); the network's sizes may not
        free = {"faint_kernel", "faint_rank", "faint_lambda", "gate_u", "gate_slope", "bright_u", "correction_max"}
        if {k: v for k, v in first["config"].items() if k not in free} != {k: v for k, v in config.to_dict().items() if k not in free}:
            msg = f"{init}: made for config {first['config']}; expected {config.to_dict()} (bases and bounds aside)"
            raise ValueError(msg)
        fixed = ("kernel", "faint_columns", "faint_rows")
        model.load_state_dict({k: v for k, v in first["model"].items() if k not in fixed}, strict=False)
        if reset_head:  # the output layer starts at zero: the model starts as the gated mix of its bases
            torch.nn.init.zeros_(model.output.weight)
        log.info("starting from the weights of %s (step %d)%s", init, first["step"], ", head reset" if reset_head else "")
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != config.to_dict() or state["steps"] != steps:
            msg = f"{ckpt}: made for config {state['config']} and {state['steps']} steps; expected {config.to_dict()} and {steps}"
            raise ValueError(msg)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        history, start = state["history"], state["step"]
        log.info("resumed from %s at step %d", ckpt, start)

    def validate():
        model.eval()
        with torch.no_grad():
            v = float(_masked_l1(model(val[0]), val[1], val[2]))
        model.train()
        return v

    def save(step):
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history, "step": step,
                 "steps": steps, "config": config.to_dict(), "seed": seed, "batch": batch, "patch": patch, "lr": lr,
                 "weight_decay": weight_decay, "blob_fraction": blob_fraction, "init": str(init) if init else None, "reset_head": reset_head, "band": pairs["band"], "pixel_scale_arcsec": pairs["pixel_scale_arcsec"],
                 "reference_fwhm_px": pairs["reference_fwhm_px"], "n_fields": n, "data_seeds": pairs["seeds"].tolist()}
        tmp = ckpt.with_suffix(".part")
        torch.save(state, tmp)
        tmp.replace(ckpt)

    if start == 0:
        history["val_step"].append(0)
        history["val_loss"].append(validate())
        log.info("step 0: validation L1 %.5f (identity: %.5f)", history["val_loss"][-1], float(_masked_l1(val[0], val[1], val[2])))
    t0 = time.perf_counter()
    model.train()
    for step in range(start + 1, steps + 1):
        x, y, m = sampler.batch(batch)
        loss = _masked_l1(model(x), y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        if step % log_every == 0 or step == steps:
            recent = np.mean(history["loss"][-log_every:])
            log.info("step %d/%d: L1 %.5f, lr %.2e, %.1f s/step", step, steps, recent, sched.get_last_lr()[0],
                     (time.perf_counter() - t0) / (step - start))
        if step % checkpoint_every == 0 or step in (steps, stop_at):
            history["val_step"].append(step)
            history["val_loss"].append(validate())
            log.info("step %d: validation L1 %.5f", step, history["val_loss"][-1])
            save(step)
        if step == stop_at:
            log.info("stopped at step %d of %d; run again to resume", step, steps)
            break
    return history


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mosaic.restore.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="pairs cache (.npz); built first when missing")
    p.add_argument("--fields", type=int, default=24, help="fields to simulate when building the cache (default 24)")
    p.add_argument("--data-seed", type=int, default=1000, help="first field seed of a new cache (default 1000)")
    p.add_argument("--out", required=True, help="directory of the checkpoint")
    p.add_argument("--size", choices=["default", "seed"], default="default", help="model size: the shipped reduced one or the seed's")
    p.add_argument("--config", help="JSON of RestormerConfig fields overriding --size")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (resume later)")
    p.add_argument("--init", default=None, help="checkpoint whose weights a new run starts from (fine-tuning)")
    p.add_argument("--reset-head", action="store_true", help="with --init: start the output layer at zero")
    p.add_argument("--blobs", type=float, default=0.5, help="share of training patches with injected smooth sources (default 0.5)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    base = SEED_CONFIG if args.size == "seed" else DEFAULT_CONFIG
    config = RestormerConfig.from_dict({**base.to_dict(), **json.loads(args.config or "{}")})
    if not Path(args.data).exists():
        build_dataset(args.data, list(range(args.data_seed, args.data_seed + args.fields)))
    train(args.data, args.out, config=config, steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr,
          seed=args.seed, checkpoint_every=args.checkpoint_every, log_every=args.log_every, stop_at=args.stop_at,
          blob_fraction=args.blobs, init=args.init, reset_head=args.reset_head)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
