"""Detector augmentation: mosaic crops keep boxes on their objects, photometric options."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aqualens.training.augment import DetectAugment, blur3, photometric, random_crops


def _frames(n: int = 4, size: int = 96) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Dark frames, each with one or two bright squares of a distinct colour, and their boxes."""
    rng = np.random.default_rng(0)
    imgs = np.zeros((n, size, size, 3), np.uint8)
    boxes, labels = [], []
    for i in range(n):
        bs = []
        for _ in range(1 + i % 2):
            w = int(rng.integers(10, 20))
            x, y = (int(v) for v in rng.integers(0, size - w, 2))
            imgs[i, y:y + w, x:x + w] = 255
            bs.append([x, y, x + w, y + w])
        boxes.append(np.asarray(bs, np.float32))
        labels.append(np.zeros(len(bs), np.int64))
    return imgs, boxes, labels


def _covers(x: torch.Tensor, b: torch.Tensor) -> bool:
    x1, y1, x2, y2 = b.round().int().tolist()
    return bool(x[:, y1:y2, x1:x2].mean() > 0.9)


def test_mosaic_boxes_stay_on_their_objects():
    imgs, boxes, labels = _frames()
    g = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(10):
        x, b, lab = random_crops(imgs, boxes, labels, 64, g, object_p=1.0, mosaic_p=1.0)
        assert x.shape == (4, 3, 64, 64)
        for i in range(4):
            assert len(b[i]) == len(lab[i]) and b[i].dtype == torch.float32
            assert lab[i].dtype == torch.int64
            for box in b[i]:
                assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
                assert _covers(x[i], box)
                seen += 1
    assert seen > 20                            # object-biased quadrants: most hold an object


def test_mosaic_off_draws_the_same_crops_as_before():
    imgs, boxes, labels = _frames()
    a = random_crops(imgs, boxes, labels, 48, torch.Generator().manual_seed(3))
    b = random_crops(imgs, boxes, labels, 48, torch.Generator().manual_seed(3), mosaic_p=0.0)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(p, q) for p, q in zip(a[1], b[1]))


def test_mosaic_with_odd_size_and_empty_frames():
    imgs = np.zeros((3, 50, 50, 3), np.uint8)
    boxes = [np.zeros((0, 4), np.float32)] * 3
    labels = [np.zeros(0, np.int64)] * 3
    x, b, lab = random_crops(imgs, boxes, labels, 33, torch.Generator().manual_seed(0),
                             mosaic_p=1.0)
    assert x.shape == (3, 3, 33, 33)
    assert all(v.shape == (0, 4) for v in b) and all(v.shape == (0,) for v in lab)


def test_augmented_mosaic_still_covers_objects():
    imgs, boxes, labels = _frames()
    g = torch.Generator().manual_seed(1)
    aug = DetectAugment(brightness=0, contrast=0, gamma=0, cast=0, blur_p=0, noise=0)
    for _ in range(5):
        x, b, lab = random_crops(imgs, boxes, labels, 64, g, object_p=1.0, mosaic_p=0.5)
        x, b, lab = aug(x, b, lab, g)
        for i in range(len(b)):
            for box in b[i]:
                x1, y1, x2, y2 = box.round().int().tolist()
                assert x[i, :, max(y1, 0):y2, max(x1, 0):x2].mean() > 0.5


def test_blur3_matches_the_binomial_convolution():
    x = torch.rand(2, 3, 17, 23)
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    assert torch.allclose(blur3(x), ref, atol=1e-6)


def test_photometric_saturation_and_haze_stay_in_range_and_change_colour():
    x = torch.rand(8, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    y = photometric(x, g, brightness=0, contrast=0, gamma=0, saturation=0.5, haze=0.5)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(x, y)
    grey = torch.full((2, 3, 4, 4), 0.5)         # saturation leaves grey alone
    z = photometric(grey, g, brightness=0, contrast=0, gamma=0, saturation=0.9)
    assert torch.allclose(z, grey, atol=1e-6)


def test_photometric_options_at_zero_draw_no_random_numbers():
    x = torch.rand(4, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = photometric(x, g1, brightness=0.2, contrast=0.2, gamma=0.2)
    b = photometric(x, g2, brightness=0.2, contrast=0.2, gamma=0.2, saturation=0.0, haze=0.0)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())
