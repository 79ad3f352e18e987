"""Restormer (Zamir et al. 2022) for single-band mosaics, in PyTorch, with configurable size.

The encoder-decoder of seed 002: four levels of Transformer blocks (multi-Dconv head transposed
attention, MDTA, over channels; gated-Dconv feed-forward, GDFN), pixel-unshuffle down- and
pixel-shuffle up-sampling, skip connections, refinement blocks, and a global residual (the
output is the input plus a learned correction).

*Linear base* (``linear_kernel > 0``, the shipped default). The network works in the asinh space
of :mod:`mosaic.restore.normalise`, ``u = asinh(x / s)``. With a plain residual there, the
correction that training asks of the PSF wings of bright stars (``u`` 4-6 with target ~0) taught a
small network to push every bright smooth pattern down by 4-6 (a factor 50-400 in flux), which
erased bright galaxies and even star cores. Here the output is built on flux-conserving linear
estimates instead: ``w = K * sinh(u)`` with a fixed ``linear_kernel``-square kernel ``K`` (the
least-squares linear map from input to target on the training fields,
:mod:`mosaic.restore.linear`, a buffer saved with the weights), mixed in linear units with the
input by a per-pixel gate ``g = sigmoid(gate_slope (u - gate_u) + 2 tanh(a / 2))`` (the input's
brightness decides: mostly the input below ~20 sigma, mostly the linear base above ~50 sigma;
the network's ``a`` only shifts the logit by +/- 2), and a learned correction ``c`` bounded by
``correction_max / (1 + (m / bright_u)^4)`` in ``u``: ``out = m + c`` with
``m = asinh(sinh(u) + g (w - sinh(u)))``. The correction can reshape faint structure, but a pixel
at ``m`` = 4, 5 and 6 (about 80, 220 and 600 sigma with the shipped softening) moves by at most
22 %, 9 % and 4 % (``bright_u`` 2.5; the shipped export tightens it to 1.5: 9 % at ``m`` = 3);
the gate only mixes two flux-conserving estimates, so bright sources keep their flux.

*Faint base* (``faint_kernel > 0``, the shipped default). The least-squares ``K`` is fitted where
the signal is, on bright stars: it nearly inverts the PSF (white-noise gain 20), so it is usable on
bright pixels only, and below the gate the model was left with the input, whose light the PSF
spreads out of a galaxy's isophote (-23 % of the isophotal flux of simulated galaxies). The low
branch of the gate is now ``wf = Wf * sinh(u)``, the Wiener filter from the drizzle PSF to the
reference PSF (:func:`mosaic.restore.linear.wiener_kernel`, ``faint_lambda``, white-noise gain
0.96), run as ``faint_rank`` separable pairs of 1-D kernels: ``m = asinh(wf + g (w - wf))``. (Training with a learned, unconstrained gate shut the linear base off everywhere,
its noise being what the asinh-space loss saw first.)

One departure, for tiled inference. Restormer's MDTA computes its channel-by-channel attention
from the whole image (a sum over all pixels), so its output at a pixel depends on every pixel of
the input: tiles would each see a different attention and disagree at their seams. Here the
attention matrix is computed per pixel from a ``window`` x ``window`` neighbourhood (cosine
similarity of the query and key channels over that window, then softmax): ``attention="local"``
(the default) makes the network local and translation-equivariant (for shifts by
``MULTIPLE`` pixels), so tiled inference with enough overlap equals whole-image inference.
``attention="global"`` is the original MDTA.

:func:`build_model` builds from a :class:`RestormerConfig`; :data:`SEED_CONFIG` is the seed's
full size, :data:`DEFAULT_CONFIG` the reduced size that is shipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RestormerConfig", "Restormer", "build_model", "DEFAULT_CONFIG", "SEED_CONFIG", "MULTIPLE"]

#: the network's input sides must be multiples of this (three 2x downsamplings)
MULTIPLE = 8


@dataclass(frozen=True)
class RestormerConfig:
    """Sizes of a Restormer: ``dim`` channels at level 1 (doubling per level), blocks and heads per level."""

    dim: int = 8
    blocks: tuple[int, int, int, int] = (1, 1, 2, 2)
    heads: tuple[int, int, int, int] = (2, 4, 8, 16)
    refinement: int = 1
    expansion: float = 2.66
    attention: str = "local"
    window: int = 7
    bias: bool = False
    linear_kernel: int = 0
    correction_max: float = 1.5
    bright_u: float = 2.5
    gate_u: float = 3.0
    gate_slope: float = 3.0
    faint_kernel: int = 0
    faint_rank: int = 8
    faint_lambda: float = 0.01

    def __post_init__(self):
        if self.attention not in ("local", "global"):
            msg = f"attention {self.attention!r} unknown; expected one of ['global', 'local']"
            raise ValueError(msg)
        if len(self.blocks) != 4 or len(self.heads) != 4:
            msg = f"blocks {self.blocks!r} and heads {self.heads!r}: expected four levels each"
            raise ValueError(msg)
        for level, h in enumerate(self.heads):
            if (self.dim * 2**level) % h:
                msg = f"heads {self.heads!r}: level {level + 1} has {self.dim * 2**level} channels, not divisible by {h}"
                raise ValueError(msg)
        if self.linear_kernel < 0 or (self.linear_kernel and self.linear_kernel % 2 == 0):
            msg = f"linear_kernel must be 0 or odd and positive; got {self.linear_kernel!r}"
            raise ValueError(msg)
        if self.faint_kernel and (self.faint_kernel % 2 == 0 or not self.linear_kernel or not 1 <= self.faint_rank <= self.faint_kernel):
            msg = (f"faint_kernel {self.faint_kernel!r} (rank {self.faint_rank!r}): expected 0, or odd with linear_kernel > 0 "
                   "and 1 <= faint_rank <= faint_kernel")
            raise ValueError(msg)
        if self.window < 1 or self.window % 2 == 0:
            msg = f"window must be odd and positive; got {self.window!r}"
            raise ValueError(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RestormerConfig:
        d = dict(d)
        for key in ("blocks", "heads"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


DEFAULT_CONFIG = RestormerConfig(linear_kernel=25, faint_kernel=61, gate_u=4.0, bright_u=1.5)
#: the seed's size: 48 channels, [4, 6, 6, 8] blocks, [1, 2, 4, 8] heads, 4 refinement blocks
SEED_CONFIG = RestormerConfig(dim=48, blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), refinement=4, expansion=2.66, attention="global")


class LayerNorm(nn.Module):
    """Layer normalisation over the channels of every pixel (with bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(dim, 1, 1))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = ((x - mu) ** 2).mean(1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network."""

    def __init__(self, dim: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


def _box(x, kernel):
    """Mean over a ``window`` x ``window`` neighbourhood (zero padding), as two 1-D passes.

    ``kernel`` is the flat ``(channels, 1, window, 1)`` kernel: depthwise convolutions are
    several times faster than ``avg_pool2d`` on CPU.
    """
    c, _, w, _ = kernel.shape
    x = F.conv2d(x, kernel, padding=(w // 2, 0), groups=c)
    return F.conv2d(x, kernel.reshape(c, 1, 1, w), padding=(0, w // 2), groups=c)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: attention across channels, global or per window."""

    def __init__(self, dim: int, heads: int, bias: bool, attention: str, window: int):
        super().__init__()
        self.heads, self.attention, self.window = heads, attention, window
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        n = dim // heads
        # fixed box kernels (not learned, not saved): over the n * n products and the n squares per head
        self.register_buffer("box_qk", torch.full((heads * n * n, 1, window, 1), 1.0 / window), persistent=False)
        self.register_buffer("box_c", torch.full((dim, 1, window, 1), 1.0 / window), persistent=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        n = c // self.heads
        if self.attention == "global":
            q, k, v = (t.reshape(b, self.heads, n, h * w) for t in (q, k, v))
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            attn = torch.softmax(q @ k.transpose(-2, -1) * self.temperature, dim=-1)
            out = (attn @ v).reshape(b, c, h, w)
        else:
            q, k, v = (t.reshape(b, self.heads, n, h, w) for t in (q, k, v))
            # per pixel: cosine similarity of channel i of q and channel j of k over the window
            qk = _box((q.unsqueeze(3) * k.unsqueeze(2)).reshape(b, self.heads * n * n, h, w), self.box_qk)
            qq = _box((q * q).reshape(b, c, h, w), self.box_c).reshape(b, self.heads, n, 1, h, w)
            kk = _box((k * k).reshape(b, c, h, w), self.box_c).reshape(b, self.heads, 1, n, h, w)
            cos = qk.reshape(b, self.heads, n, n, h, w) / torch.sqrt(qq * kk + 1e-12)
            attn = torch.softmax(cos * self.temperature.reshape(1, self.heads, 1, 1, 1, 1), dim=3)
            out = (attn * v.unsqueeze(2)).sum(3).reshape(b, c, h, w)
        return self.project_out(out)


class Block(nn.Module):
    """Transformer block: MDTA and GDFN, each after layer normalisation, with residuals."""

    def __init__(self, dim: int, heads: int, cfg: RestormerConfig):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = MDTA(dim, heads, cfg.bias, cfg.attention, cfg.window)
        self.norm2 = LayerNorm(dim)
        self.ffn = GDFN(dim, cfg.expansion, cfg.bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stage(n: int, dim: int, heads: int, cfg: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*[Block(dim, heads, cfg) for _ in range(n)])


def _sinh(x):
    # written out: the TorchScript ONNX exporter has no aten::sinh / aten::asinh
    return 0.5 * (torch.exp(x) - torch.exp(-x))


def _asinh(y):
    return torch.sign(y) * torch.log(y.abs() + torch.sqrt(y * y + 1.0))


class Restormer(nn.Module):
    """The four-level Restormer on one-channel images (sides multiples of :data:`MULTIPLE`)."""

    def __init__(self, cfg: RestormerConfig = DEFAULT_CONFIG):
        super().__init__()
        self.cfg = cfg
        d, nb, nh = cfg.dim, cfg.blocks, cfg.heads
        k = cfg.linear_kernel
        # the linear base: its kernel is fitted to data (mosaic.restore.linear), not learned; identity until set
        if k:
            self.register_buffer("kernel", F.pad(torch.ones(1, 1, 1, 1), (k // 2,) * 4))
        if cfg.faint_kernel:  # the faint base: a Wiener filter as faint_rank separable pairs; identity until set
            fk, r = cfg.faint_kernel, cfg.faint_rank
            self.register_buffer("faint_columns", torch.zeros(r, 1, fk, 1))
            self.register_buffer("faint_rows", torch.zeros(r, 1, 1, fk))
            self.faint_columns[0, 0, fk // 2, 0] = self.faint_rows[0, 0, 0, fk // 2] = 1.0
        self.embed = nn.Conv2d(2 if k else 1, d, 3, padding=1, bias=cfg.bias)
        self.enc1 = _stage(nb[0], d, nh[0], cfg)
        self.down12 = nn.Sequential(nn.Conv2d(d, d // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.enc2 = _stage(nb[1], 2 * d, nh[1], cfg)
        self.down23 = nn.Sequential(nn.Conv2d(2 * d, d, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.enc3 = _stage(nb[2], 4 * d, nh[2], cfg)
        self.down34 = nn.Sequential(nn.Conv2d(4 * d, 2 * d, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.latent = _stage(nb[3], 8 * d, nh[3], cfg)
        self.up43 = nn.Sequential(nn.Conv2d(8 * d, 16 * d, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.reduce3 = nn.Conv2d(8 * d, 4 * d, 1, bias=cfg.bias)
        self.dec3 = _stage(nb[2], 4 * d, nh[2], cfg)
        self.up32 = nn.Sequential(nn.Conv2d(4 * d, 8 * d, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.reduce2 = nn.Conv2d(4 * d, 2 * d, 1, bias=cfg.bias)
        self.dec2 = _stage(nb[1], 2 * d, nh[1], cfg)
        self.up21 = nn.Sequential(nn.Conv2d(2 * d, 4 * d, 3, padding=1, bias=False), nn.PixelShuffle(2))
        # level 1 of the decoder has 2 * dim channels: twice the heads keeps the channels per head
        self.dec1 = _stage(nb[0], 2 * d, 2 * nh[0], cfg)
        self.refine = _stage(cfg.refinement, 2 * d, 2 * nh[0], cfg)
        self.output = nn.Conv2d(2 * d, 2 if k else 1, 3, padding=1, bias=cfg.bias)
        if k:  # untrained: the brightness-gated mix of the input and the linear base, no correction
            nn.init.zeros_(self.output.weight)

    def forward(self, x):
        if not self.cfg.linear_kernel:
            return self._net(x) + x
        lin = _sinh(x)
        w = F.conv2d(lin, self.kernel, padding=self.cfg.linear_kernel // 2)
        gate, corr = self._net(torch.cat([x, _asinh(w)], 1)).chunk(2, dim=1)
        # the gate: the input's brightness decides (logit gate_slope * (u - gate_u)), the network shifts it by +/- 2
        g = torch.sigmoid(2.0 * torch.tanh(0.5 * gate) + self.cfg.gate_slope * (x - self.cfg.gate_u))
        faint = self._faint(lin) if self.cfg.faint_kernel else lin
        m = _asinh(faint + g * (w - faint))
        c = self.cfg.correction_max
        return m + c * torch.tanh(corr / c) / (1 + (m / self.cfg.bright_u) ** 4)

    def _faint(self, lin):
        h = self.cfg.faint_kernel // 2
        cols = F.conv2d(lin, self.faint_columns, padding=(h, 0))
        return F.conv2d(cols, self.faint_rows, padding=(0, h), groups=self.cfg.faint_rank).sum(1, keepdim=True)

    def set_faint_kernel(self, kernel) -> None:
        """Set the faint base (``faint_kernel`` square, applied as a convolution; stored turned by 180 degrees, as its best ``faint_rank`` separable pairs)."""
        from mosaic.restore.linear import separable_factors  # noqa: PLC0415

        fk, r = self.cfg.faint_kernel, self.cfg.faint_rank
        if not fk or tuple(kernel.shape) != (fk, fk):
            msg = f"faint kernel of shape {tuple(kernel.shape)}; expected ({fk}, {fk}) for faint_kernel={fk}"
            raise ValueError(msg)
        cols, rows = separable_factors(np.asarray(kernel, np.float64)[::-1, ::-1], r)
        self.faint_columns.copy_(torch.as_tensor(cols, dtype=torch.float32).reshape(r, 1, fk, 1))
        self.faint_rows.copy_(torch.as_tensor(rows, dtype=torch.float32).reshape(r, 1, 1, fk))

    def set_kernel(self, kernel) -> None:
        """Set the linear base's kernel (``linear_kernel`` square, NumPy or torch), applied as a convolution.

        PyTorch's ``conv2d`` correlates, so the buffer holds the kernel turned by 180 degrees (models
        trained before this held the kernel itself: their bright base was the mirrored fit).
        """
        k = self.cfg.linear_kernel
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        if not k or kernel.shape != (k, k):
            msg = f"kernel of shape {tuple(kernel.shape)}; expected ({k}, {k}) for linear_kernel={k}"
            raise ValueError(msg)
        self.kernel.copy_(kernel.flip(0, 1).reshape(1, 1, k, k))

    def _net(self, x):
        e1 = self.enc1(self.embed(x))
        e2 = self.enc2(self.down12(e1))
        e3 = self.enc3(self.down23(e2))
        z = self.latent(self.down34(e3))
        d3 = self.dec3(self.reduce3(torch.cat([self.up43(z), e3], 1)))
        d2 = self.dec2(self.reduce2(torch.cat([self.up32(d3), e2], 1)))
        d1 = self.dec1(torch.cat([self.up21(d2), e1], 1))
        return self.output(self.refine(d1))


def build_model(cfg: RestormerConfig | dict | None = None) -> Restormer:
    """A Restormer of the given size (default: :data:`DEFAULT_CONFIG`)."""
    if isinstance(cfg, dict):
        cfg = RestormerConfig.from_dict(cfg)
    return Restormer(cfg or DEFAULT_CONFIG)
