"""CenterNet training targets and loss for the detector (:class:`~aqualens.training.nets.Detector`).

Targets are built per batch on the CPU from the boxes of each crop: a Gaussian heatmap peak per
object (radius after CenterNet, so a box shifted by it keeps IoU >= 0.7), log-size and sub-cell
offset regressed at the centre cell and, with ``reg_cells``, its neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius so a box shifted by it keeps IoU >= min_overlap (smallest of 3 cases)."""
    a1, b1 = 1, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
                      h: int, w: int, stride: int, reg_cells: int = 1
                      ) -> dict[str, torch.Tensor]:
    """Heatmap (N,C,h,w) with Gaussian peaks, size/offset targets and a regression weight mask
    (N,h,w).

    ``reg_cells`` = 3 also trains size and offset on the 3x3 cells around each centre (weight
    0.5, only cells whose centre lies inside the box): a peak one cell off still gets the right
    box (its offset target points back to the true centre), and the size head sees nine
    samples per fish instead of one.
    """
    n = len(boxes)
    heat = np.zeros((n, num_classes, h, w), np.float32)
    size = np.zeros((n, 2, h, w), np.float32)
    offset = np.zeros((n, 2, h, w), np.float32)
    mask = np.zeros((n, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for i in range(n):
        b = boxes[i].cpu().numpy().reshape(-1, 4)
        lab = labels[i].cpu().numpy().reshape(-1)
        # Larger boxes first so a small box drawn later keeps its own size target.
        for j in np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])):
            x1, y1, x2, y2 = b[j]
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            r = max(0.0, _gaussian_radius(bh / stride, bw / stride))
            sigma = (2 * int(r) + 1) / 6
            g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
            heat[i, lab[j]] = np.maximum(heat[i, lab[j]], g)
            if reg_cells > 1:
                k = reg_cells // 2
                for jy in range(max(0, iy - k), min(h, iy + k + 1)):
                    for jx in range(max(0, ix - k), min(w, ix + k + 1)):
                        if (jx, jy) == (ix, iy) or mask[i, jy, jx] >= 1.0:
                            continue              # never overwrite another object's centre
                        px, py = (jx + 0.5) * stride, (jy + 0.5) * stride
                        if not (x1 <= px <= x2 and y1 <= py <= y2):
                            continue
                        size[i, :, jy, jx] = (math.log(bw), math.log(bh))
                        offset[i, :, jy, jx] = (cx - jx, cy - jy)
                        mask[i, jy, jx] = 0.5
            size[i, :, iy, ix] = (math.log(bw), math.log(bh))
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, iy, ix] = 1.0
    return {k: torch.from_numpy(v) for k, v in
            (("heat", heat), ("size", size), ("offset", offset), ("mask", mask))}


def centernet_loss(out: tuple[torch.Tensor, ...], tgt: dict[str, torch.Tensor],
                   size_weight: float = 0.5) -> torch.Tensor:
    """Penalty-reduced focal loss on the heatmap + L1 on log-size and offset at centres (and
    their neighbours, weighted by the mask)."""
    heat, size, offset = out
    gt = tgt["heat"]
    p = torch.sigmoid(heat).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - gt) ** 4 * neg
    npos = pos.sum().clamp(min=1)
    focal = -(pos_loss.sum() + neg_loss.sum()) / npos
    m = tgt["mask"].unsqueeze(1)
    nm = m.sum().clamp(min=1)
    l_size = (F.l1_loss(size, tgt["size"], reduction="none") * m).sum() / nm
    l_off = (F.l1_loss(offset, tgt["offset"], reduction="none") * m).sum() / nm
    return focal + size_weight * l_size + l_off
