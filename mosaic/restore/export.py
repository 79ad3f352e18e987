"""Export a trained checkpoint to ONNX, with what inference must check in the model's metadata.

``python -m mosaic.restore.export CHECKPOINT.pt OUT.onnx`` writes the network with dynamic
height and width (multiples of 8), opset 17, and metadata: ``mosaic_restore`` (format version),
``band``, ``pixel_scale_arcsec`` (of the output grid it was trained on), ``reference_fwhm_px``,
``softening``, ``multiple``, ``receptive_halo``, ``drizzle_kernel`` and ``drizzle_pixfrac`` (how its
inputs were drizzled) and ``config`` / ``training`` (JSON).

``python -m mosaic.restore.export --from-onnx MODEL.onnx CHECKPOINT.pt`` goes the other way: it reads
an exported model's weights back into a checkpoint (with the configuration it was trained with),
so that a shipped model whose training checkpoint is gone can be fine-tuned (``train --init``) or
re-exported with other :data:`BOUND_KEYS`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mosaic.restore.infer import DRIZZLE_KERNEL, DRIZZLE_PIXFRAC
from mosaic.restore.model import MULTIPLE, RestormerConfig, build_model
from mosaic.restore.normalise import SOFTENING

__all__ = ["export_onnx", "checkpoint_from_onnx", "load_checkpoint", "default_halo", "FORMAT_VERSION", "BOUND_KEYS"]

log = logging.getLogger(__name__)

#: version of the metadata layout that :mod:`mosaic.restore.infer` reads
FORMAT_VERSION = "1"


#: configuration keys that an export may change without retraining: the bound of the correction and the
#: brightness gate's threshold and slope (fixed numbers of the mix, not weights; chosen on validation fields)
BOUND_KEYS = ("correction_max", "bright_u", "gate_u", "gate_slope")


def default_halo(config: dict) -> int:
    """Context a tiled pixel needs: the network's 96 px and the widest base's radius, up to a multiple of 8."""
    radius = max(config.get("linear_kernel", 0), config.get("faint_kernel", 0)) // 2
    return -(-(96 + radius) // MULTIPLE) * MULTIPLE


def load_checkpoint(path, *, bound: dict | None = None):
    """The model (eval mode) and the state dict of a checkpoint written by :mod:`mosaic.restore.train`.

    ``bound``: new values of :data:`BOUND_KEYS` (a tighter bound on the network's correction than
    it was trained with, another gate threshold or slope; the weights are unchanged).
    """
    state = torch.load(path, weights_only=False, map_location="cpu")
    bound = dict(bound or {})
    if set(bound) - set(BOUND_KEYS):
        msg = f"bound keys {sorted(set(bound) - set(BOUND_KEYS))}; expected only {list(BOUND_KEYS)}"
        raise ValueError(msg)
    if bound:
        state["trained_config"] = dict(state["config"])
        state["config"] = {**state["config"], **bound}
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def export_onnx(checkpoint, out, *, opset: int = 17, extra: dict | None = None, bound: dict | None = None) -> Path:
    """Write the checkpoint's model as ONNX with its metadata; returns the path (``bound``: see :func:`load_checkpoint`)."""
    import onnx  # noqa: PLC0415

    model, state = load_checkpoint(checkpoint, bound=bound)
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    x = torch.zeros(1, 1, 4 * MULTIPLE, 4 * MULTIPLE)
    torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["output"], opset_version=opset,
                      dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}}, dynamo=False)
    proto = onnx.load(str(tmp))
    training = {k: state[k] for k in ("steps", "batch", "patch", "lr", "weight_decay", "seed", "n_fields", "data_seeds")}
    training["blob_fraction"] = state.get("blob_fraction", 0.0)
    training["step"] = state.get("step", state["steps"])
    training["init"] = state.get("init")
    training["reset_head"] = state.get("reset_head", False)
    if "trained_config" in state:
        training["trained_config"] = state["trained_config"]
    training["final_validation_l1"] = state["history"]["val_loss"][-1] if state["history"]["val_loss"] else None
    meta = {
        "mosaic_restore": FORMAT_VERSION,
        "band": str(state["band"]).upper(),
        "pixel_scale_arcsec": repr(float(state["pixel_scale_arcsec"])),
        "reference_fwhm_px": repr(float(state["reference_fwhm_px"])),
        "softening": repr(float(state.get("softening", SOFTENING))),
        "multiple": str(MULTIPLE),
        "drizzle_kernel": str(state.get("drizzle_kernel", DRIZZLE_KERNEL)),
        "drizzle_pixfrac": repr(float(state.get("drizzle_pixfrac", DRIZZLE_PIXFRAC))),
        "config": json.dumps(state["config"]),
        "training": json.dumps(training),
        **(extra or {}),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    log.info("exported %s to %s (%.2f MB)", checkpoint, out, out.stat().st_size / 1e6)
    return out


def checkpoint_from_onnx(model_path, out, *, atol: float = 1e-4) -> Path:
    """Write a checkpoint (as :mod:`mosaic.restore.train` saves, without optimiser state) from an exported model.

    The weights are the ONNX initializers of the same names; the exporter folds each attention's
    ``temperature`` (reshaped) into an anonymous constant, taken in the order of the blocks (sizes
    checked). The checkpoint's ``config`` is the one the model was trained with (the export's
    bound undone, from the ``training`` metadata). Checked: PyTorch with the exported config
    equals ONNX Runtime to ``atol`` on a noise image with a bright source; otherwise ``ValueError``.
    """
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    proto = onnx.load(str(model_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    if "config" not in meta or "training" not in meta:
        msg = f"{model_path}: no 'config'/'training' metadata; expected a model written by mosaic.restore.export"
        raise ValueError(msg)
    config, training = json.loads(meta["config"]), json.loads(meta["training"])
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    model = build_model(config)
    want = model.state_dict()
    missing = [k for k in want if k not in arrays]
    anonymous = [k for k in arrays if k not in want]
    if any(not k.endswith(".temperature") for k in missing) or len(anonymous) != len(missing):
        msg = f"{model_path}: weights {missing[:5]} not found among the initializers; expected a model of config {config}"
        raise ValueError(msg)
    state = {}
    for key, ref in want.items():
        a = arrays[anonymous[missing.index(key)]] if key in missing else arrays[key]
        if a.size != ref.numel():
            msg = f"{model_path}: {key} has {a.size} values; expected {ref.numel()}"
            raise ValueError(msg)
        state[key] = torch.from_numpy(np.array(a, np.float32).reshape(tuple(ref.shape)))
    model.load_state_dict(state)
    model.eval()
    x = np.random.default_rng(0).normal(size=(1, 1, 96, 96)).astype(np.float32)
    x[0, 0, 40:44, 50:54] += 6.0
    got = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        diff = float(np.abs(model(torch.from_numpy(x)).numpy() - got).max())
    if not diff <= atol:
        msg = f"{model_path}: the rebuilt network differs from ONNX Runtime by {diff:.2e}; expected <= {atol:g}"
        raise ValueError(msg)
    # as train.py saves it (tuples, not JSON's lists), so that train --init accepts the checkpoint
    trained = RestormerConfig.from_dict(training.pop("trained_config", config)).to_dict()
    ckpt = {"model": model.state_dict(), "config": trained, "history": {"step": [], "loss": [], "val_step": [], "val_loss": []},
            **{k: training[k] for k in ("steps", "batch", "patch", "lr", "weight_decay", "seed", "n_fields", "data_seeds")},
            "step": training.get("step", training["steps"]), "blob_fraction": training.get("blob_fraction", 0.0),
            "init": training.get("init"), "reset_head": training.get("reset_head", False), "from_onnx": str(model_path),
            "band": meta["band"], "pixel_scale_arcsec": float(meta["pixel_scale_arcsec"]),
            "reference_fwhm_px": float(meta["reference_fwhm_px"]), "softening": float(meta.get("softening", SOFTENING))}
    if training.get("final_validation_l1") is not None:
        ckpt["history"]["val_step"], ckpt["history"]["val_loss"] = [ckpt["step"]], [training["final_validation_l1"]]
    out = Path(out)
    torch.save(ckpt, out)
    log.info("rebuilt %s from %s (PyTorch vs ONNX Runtime: max |difference| %.2e)", out, model_path, diff)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mosaic.restore.export", description="export a checkpoint to ONNX")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--halo", type=int, default=None,
                   help="overlap recommended for tiled inference, stored in the metadata (default: the network's 96 and the "
                        "widest linear base's radius, rounded up to a multiple of 8: 128 for the shipped model; "
                        "tests/restore/test_infer.py checks it)")
    p.add_argument("--bound", default=None, help=f"JSON of new {'/'.join(BOUND_KEYS)} (a tighter correction bound, another gate than trained with)")
    p.add_argument("--from-onnx", action="store_true", help="the other way: read the model CHECKPOINT (an .onnx) back into the checkpoint OUT")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.from_onnx:
        checkpoint_from_onnx(args.checkpoint, args.out)
        return 0
    bound = json.loads(args.bound) if args.bound else None
    halo = args.halo if args.halo is not None else default_halo(load_checkpoint(args.checkpoint)[1]["config"])
    export_onnx(args.checkpoint, args.out, extra={"receptive_halo": str(halo)}, bound=bound)
    model, _ = load_checkpoint(args.checkpoint, bound=bound)
    x = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    import onnxruntime as ort  # noqa: PLC0415

    got = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    log.info("ONNX Runtime vs PyTorch on a 64x64 noise image: max |difference| %.2e", float(np.abs(got - want).max()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
