"""Compact CNNs in plain PyTorch: one backbone family, a classifier and an anchor-free detector.

The backbone is ResNet-shaped with depthwise-separable residual blocks so that it trains on a
laptop CPU (a few hundred thousand parameters at width 1.0) and scales up with ``width`` on a
GPU. The detector is CenterNet-style: a light FPN brings the stride-8/16/32 features down to
stride 4 (so ~16 px fish cover 4x4 cells) and three heads predict a per-class centre heatmap, the
box size and the sub-cell centre offset. :class:`DetectorExport` decodes those maps into the ONNX
conventions of CONTRACTS.md (``boxes`` N,K,4 xyxy in input pixels, ``scores``, ``labels``; K fixed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class NetConfig:
    """Everything needed to rebuild a network (stored in checkpoints and model params)."""

    task: str = "classify"            # classify | detect
    num_classes: int = 2
    in_channels: int = 3
    width: float = 1.0
    depths: tuple[int, ...] = (1, 2, 2, 2)
    dropout: float = 0.2
    head_channels: int = 48           # detector FPN / head width
    stem_depth: int = 2               # 3x3 convs at stride 2 (detector: 1, cheap at full res)
    stem_width: int = 16              # stem channels at width 1
    dense_head: bool = False          # detector: dense (not depthwise) 3x3 convs in FPN + head
    max_detections: int = 100         # K of the ONNX detection outputs
    flip_test: bool = False           # detector: average with the mirrored image (in the graph)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"] = list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        d = dict(d)
        d["depths"] = tuple(d.get("depths", (1, 2, 2, 2)))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _ch(base: int, width: float) -> int:
    return max(8, int(round(base * width / 8)) * 8)


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DSBlock(nn.Module):
    """Depthwise-separable residual block: dw3x3 -> pw1x1 -> dw3x3 -> pw1x1 (+ shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBN(cin, cin, 3, stride, groups=cin), ConvBN(cin, cout, 1),
            ConvBN(cout, cout, 3, 1, groups=cout), ConvBN(cout, cout, 1, act=False))
        self.short = (nn.Identity() if stride == 1 and cin == cout
                      else nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                         ConvBN(cin, cout, 1, act=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x), inplace=True)


class Backbone(nn.Module):
    """Stem (stride 2) then four stages at strides 4, 8, 16, 32; returns every stage's output."""

    def __init__(self, in_channels: int = 3, width: float = 1.0,
                 depths: tuple[int, ...] = (1, 2, 2, 2), stem_depth: int = 2,
                 stem_width: int = 16) -> None:
        super().__init__()
        chans = [_ch(c, width) for c in (24, 48, 96, 192)]
        stem = _ch(stem_width, width)
        self.stem = nn.Sequential(ConvBN(in_channels, stem, 3, 2),
                                  *[ConvBN(stem, stem, 3, 1) for _ in range(stem_depth - 1)])
        stages, cin = [], stem
        for cout, depth in zip(chans, depths):
            blocks = [DSBlock(cin, cout, 2)] + [DSBlock(cout, cout) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class Classifier(nn.Module):
    """Backbone + global average pooling + dropout + linear; outputs ``logits`` (N, C)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.in_channels, cfg.width, cfg.depths, cfg.stem_depth,
                                 cfg.stem_width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.backbone.channels[-1], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)[-1]
        return self.fc(self.dropout(f.mean(dim=(2, 3))))

    def reset_head(self, num_classes: int, keep: dict[int, int] | None = None) -> None:
        """New label set for fine-tuning; ``keep`` maps new index -> old index to copy weights."""
        old = self.fc
        self.fc = nn.Linear(old.in_features, num_classes)
        if keep:
            with torch.no_grad():
                for new, prev in keep.items():
                    self.fc.weight[new] = old.weight[prev]
                    self.fc.bias[new] = old.bias[prev]
        self.cfg.num_classes = num_classes


class Detector(nn.Module):
    """CenterNet-style detector at stride 4: heatmap (C), size (2, log-pixels), offset (2).

    The stride-4 part is kept thin (depthwise + pointwise at ``head_channels``) because on a CPU
    the full-resolution maps, not the parameters, dominate the cost.
    """

    stride = 4

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.in_channels, cfg.width, cfg.depths, cfg.stem_depth,
                                 cfg.stem_width)
        hc = _ch(cfg.head_channels, cfg.width)
        self.lateral = nn.ModuleList([ConvBN(c, hc, 1) for c in self.backbone.channels])
        # Dense 3x3 convs cost about the same CPU time as depthwise + pointwise at these widths
        # (depthwise convs are memory-bound) and learn much faster from scratch.
        def block() -> nn.Module:
            if cfg.dense_head:
                return ConvBN(hc, hc, 3)
            return nn.Sequential(ConvBN(hc, hc, 3, groups=hc), ConvBN(hc, hc, 1))

        self.smooth = nn.ModuleList([block() for _ in self.backbone.channels[:-1]])
        self.trunk = block()
        self.heat = nn.Conv2d(hc, cfg.num_classes, 1)
        self.reg = nn.Conv2d(hc, 4, 1)                      # log w, log h, dx, dy
        # Focal-loss prior: start with p ~= 0.01 so the loss is not swamped by background.
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.constant_(self.reg.bias, 0.0)
        with torch.no_grad():
            self.reg.bias[:2] = math.log(16.0)              # typical small-object size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        y = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            y = F.interpolate(y, size=lat.shape[-2:], mode="nearest") + lat
            y = self.smooth[i](y)
        y = self.trunk(y)
        reg = self.reg(y)
        return self.heat(y), reg[:, :2], reg[:, 2:]

    def reset_head(self, num_classes: int, keep: dict[int, int] | None = None) -> None:
        """New label set for fine-tuning; ``keep`` maps new index -> old index."""
        old = self.heat
        new = nn.Conv2d(old.in_channels, num_classes, 1)
        nn.init.constant_(new.bias, -math.log((1 - 0.01) / 0.01))
        if keep:
            with torch.no_grad():
                for n, p in keep.items():
                    new.weight[n] = old.weight[p]
                    new.bias[n] = old.bias[p]
        self.heat = new
        self.cfg.num_classes = num_classes


def flip_merge(net: Detector, x: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test-time horizontal flip: heatmap probabilities, log-sizes and offsets of ``x`` and of
    its mirror image, mirrored back and averaged (CenterNet's flip test).

    A centre at ``stride * (j + o)`` in the mirror lies at ``stride * ((w - 1 - j) + 1 - o)``
    in the original, so the x offset becomes ``1 - o``. Returns probabilities, not logits.
    """
    n = x.shape[0]
    heat, size, offset = net(torch.cat([x, x.flip(3)], dim=0))
    prob = torch.sigmoid(heat)
    prob = (prob[:n] + prob[n:].flip(3)) / 2
    size = (size[:n] + size[n:].flip(3)) / 2
    off_m = offset[n:].flip(3)
    off_m = torch.cat([1 - off_m[:, :1], off_m[:, 1:]], dim=1)
    offset = (offset[:n] + off_m) / 2
    return prob, size, offset


def decode_centernet(heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, stride: int,
                     k: int, is_prob: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peaks of the heatmap -> (boxes N,K,4 xyxy input px, scores N,K, labels N,K int64).

    ``heat`` holds logits, or probabilities with ``is_prob``. Only ops that export to ONNX
    cleanly (max-pool peak test, topk, gather), so the same code runs in training-time
    evaluation and in the exported graph.
    """
    n, c, h, w = heat.shape
    prob = heat if is_prob else torch.sigmoid(heat)
    peak = F.max_pool2d(prob, 3, stride=1, padding=1)
    prob = prob * (peak == prob).to(prob.dtype)
    flat = prob.reshape(n, -1)
    k = min(k, c * h * w)
    scores, idx = torch.topk(flat, k, dim=1)
    labels = torch.div(idx, h * w, rounding_mode="floor")
    pos = idx - labels * (h * w)
    ys = torch.div(pos, w, rounding_mode="floor")
    xs = pos - ys * w
    size_flat = size.reshape(n, 2, h * w)
    off_flat = offset.reshape(n, 2, h * w)
    gidx = pos.unsqueeze(1).expand(n, 2, k)
    wh = torch.exp(torch.gather(size_flat, 2, gidx).clamp(max=10.0))      # (n, 2, k) pixels
    off = torch.gather(off_flat, 2, gidx)
    cx = (xs.to(heat.dtype) + off[:, 0]) * stride
    cy = (ys.to(heat.dtype) + off[:, 1]) * stride
    boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2,
                         cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], dim=2)
    return boxes, scores, labels.to(torch.int64)


class DetectorExport(nn.Module):
    """The detector plus decoding (and the flip test when ``cfg.flip_test``): the graph that is
    exported to ONNX and the one training-time evaluation runs, so both paths agree."""

    def __init__(self, det: Detector, flip_test: bool | None = None) -> None:
        super().__init__()
        self.det = det
        self.flip_test = det.cfg.flip_test if flip_test is None else flip_test

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.det.cfg.max_detections
        if self.flip_test:
            prob, size, offset = flip_merge(self.det, x)
            return decode_centernet(prob, size, offset, self.det.stride, k, is_prob=True)
        heat, size, offset = self.det(x)
        return decode_centernet(heat, size, offset, self.det.stride, k)


def build_net(cfg: NetConfig) -> nn.Module:
    """The network for ``cfg.task``."""
    if cfg.task == "classify":
        return Classifier(cfg)
    if cfg.task == "detect":
        return Detector(cfg)
    raise ValueError(f"unknown task {cfg.task!r}; valid: classify, detect")


def count_params(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
