"""training.inference: predictions of a network being trained follow the exported graph."""

from __future__ import annotations

import numpy as np
import torch

from tests.training.helpers import trained_like_detector


def test_predict_detect_follows_the_exported_graph():
    from aqualens.training.inference import predict_detect
    from aqualens.training.nets import DetectorExport

    net = trained_like_detector(True)
    imgs = np.random.default_rng(3).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    dets = predict_detect(net, imgs, [0.5] * 3, [0.25] * 3, torch.device("cpu"))
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        _, scores, _ = DetectorExport(net)(x)
    assert np.isclose(dets[0][1].max(), float(scores[0].max()), atol=1e-6)
