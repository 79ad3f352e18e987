"""Export a trained checkpoint to ONNX, with what inference must check in the model's metadata.

``python -m mosaic.restore.export CHECKPOINT.pt OUT.onnx`` writes the network with dynamic
height and width (multiples of 8), opset 17, and metadata: ``mosaic_restore`` (format version),
``band``, ``pixel_scale_arcsec`` (of the output grid it was trained on), ``reference_fwhm_px``,
``softening``, ``multiple``, ``receptive_halo`` and ``config`` / ``training`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mosaic.restore.model import MULTIPLE, build_model
from mosaic.restore.normalise import SOFTENING

__all__ = ["export_onnx", "load_checkpoint", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

#: version of the metadata layout that :mod:`mosaic.restore.infer` reads
FORMAT_VERSION = "1"


def load_checkpoint(path):
    """The model (eval mode) and the state dict of a checkpoint written by :mod:`mosaic.restore.train`."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def export_onnx(checkpoint, out, *, opset: int = 17, extra: dict | None = None) -> Path:
    """Write the checkpoint's model as ONNX with its metadata; returns the path."""
    import onnx  # noqa: PLC0415

    model, state = load_checkpoint(checkpoint)
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    x = torch.zeros(1, 1, 4 * MULTIPLE, 4 * MULTIPLE)
    torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["output"], opset_version=opset,
                      dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}}, dynamo=False)
    proto = onnx.load(str(tmp))
    training = {k: state[k] for k in ("steps", "batch", "patch", "lr", "weight_decay", "seed", "n_fields", "data_seeds")}
    training["final_validation_l1"] = state["history"]["val_loss"][-1] if state["history"]["val_loss"] else None
    meta = {
        "mosaic_restore": FORMAT_VERSION,
        "band": str(state["band"]).upper(),
        "pixel_scale_arcsec": repr(float(state["pixel_scale_arcsec"])),
        "reference_fwhm_px": repr(float(state["reference_fwhm_px"])),
        "softening": repr(float(state.get("softening", SOFTENING))),
        "multiple": str(MULTIPLE),
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mosaic.restore.export", description="export a checkpoint to ONNX")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--halo", type=int, default=112,
                   help="overlap recommended for tiled inference, stored in the metadata (default 112: the network's 96 "
                        "and the linear base's 12; tests/restore/test_infer.py checks it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    export_onnx(args.checkpoint, args.out, extra={"receptive_halo": str(args.halo)})
    model, _ = load_checkpoint(args.checkpoint)
    x = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    import onnxruntime as ort  # noqa: PLC0415

    got = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    log.info("ONNX Runtime vs PyTorch on a 64x64 noise image: max |difference| %.2e", float(np.abs(got - want).max()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
