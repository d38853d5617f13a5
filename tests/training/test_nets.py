"""Networks: CenterNet decoding, ONNX export and parity with PyTorch, augmentation geometry."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from aqualens.training.augment import DetectAugment, random_crops
from aqualens.training.export import export_onnx, parity_check
from aqualens.training.nets import NetConfig, build_net, count_params, decode_centernet
from tests.training.helpers import trained_like_detector


def test_decode_puts_a_box_where_the_peak_is():
    heat = torch.full((1, 2, 8, 8), -10.0)
    heat[0, 1, 3, 5] = 5.0                       # class 1 at cell (x=5, y=3)
    size = torch.zeros(1, 2, 8, 8)
    size[0, :, 3, 5] = torch.log(torch.tensor([12.0, 6.0]))
    off = torch.zeros(1, 2, 8, 8)
    off[0, :, 3, 5] = torch.tensor([0.5, 0.25])
    boxes, scores, labels = decode_centernet(heat, size, off, stride=4, k=3)
    assert boxes.shape == (1, 3, 4) and labels.dtype == torch.int64
    cx, cy = (5 + 0.5) * 4, (3 + 0.25) * 4
    assert boxes[0, 0].tolist() == pytest.approx([cx - 6, cy - 3, cx + 6, cy + 3])
    assert labels[0, 0] == 1 and scores[0, 0] > 0.99 and scores[0, 1] < 0.01


def test_sizes_are_cpu_friendly():
    assert 100_000 < count_params(build_net(NetConfig(task="classify", num_classes=10))) < 1_500_000
    for dense in (False, True):
        net = build_net(NetConfig(task="detect", num_classes=1, dense_head=dense))
        assert 100_000 < count_params(net) < 1_500_000


@pytest.mark.parametrize("task,channels,size,dense", [("classify", 1, 32, False),
                                                      ("detect", 3, 64, False),
                                                      ("detect", 3, 64, True)])
def test_onnx_export_parity(tmp_path, task, channels, size, dense):
    torch.manual_seed(0)
    net = build_net(NetConfig(task=task, num_classes=3, in_channels=channels,
                              max_detections=20, dense_head=dense)).eval()
    if task == "detect":                          # distinct peaks, as in a trained model
        with torch.no_grad():
            net.heat.bias.fill_(0.0)
            net.heat.weight.mul_(20)
    path = export_onnx(net, tmp_path / "m.onnx", channels, size, size)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    outs = [o.name for o in model.graph.output]
    assert outs == (["logits"] if task == "classify" else ["boxes", "scores", "labels"])
    # dynamic batch: 3 images through a graph exported with 2
    x = np.random.default_rng(1).standard_normal((3, channels, size, size)).astype(np.float32)
    report = parity_check(net, path, x)
    assert report["ok"]
    if task == "detect":
        assert report["checked"] > 10 and report["boxes_max_abs_diff"] < 1e-2


def test_box_aware_augmentation_keeps_boxes_on_objects():
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[0, 20:30, 40:50] = 255
    boxes = [np.array([[40, 20, 50, 30]], np.float32)]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, b, lab = random_crops(img, boxes, [np.array([0])], 48, g, object_p=1.0)
        x, b, lab = DetectAugment(brightness=0, contrast=0, gamma=0, cast=0, blur_p=0,
                                  noise=0)(x, b, lab, g)
        if len(b[0]):
            x1, y1, x2, y2 = b[0][0].round().int().tolist()
            inside = x[0, :, max(y1, 0):y2, max(x1, 0):x2].mean()
            assert inside > 0.5                     # the box still covers the bright object


def test_flip_test_is_mirror_equivariant():
    """With the flip test, a mirrored image gives exactly the mirrored detections."""
    from aqualens.training.nets import DetectorExport

    net = trained_like_detector(True)
    graph = DetectorExport(net)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        b, s, _ = graph(x)
        bm, sm, _ = graph(x.flip(3))
    for i in range(2):
        mirrored = torch.stack([96 - b[i, :, 2], b[i, :, 1], 96 - b[i, :, 0], b[i, :, 3]], 1)
        order, order_m = torch.argsort(s[i]), torch.argsort(sm[i])
        assert torch.allclose(s[i][order], sm[i][order_m], atol=1e-5)
        strong = s[i][order] > s[i].min() + 1e-3
        assert torch.allclose(mirrored[order][strong], bm[i][order_m][strong], atol=1e-3)
    # Without it, the graph is the plain decoding of the network.
    plain = DetectorExport(net, flip_test=False)
    with torch.no_grad():
        ref = decode_centernet(*net(x), net.stride, 15)
        assert torch.equal(plain(x)[1], ref[1])


def test_flip_test_export_parity(tmp_path):
    net = trained_like_detector(True)
    path = export_onnx(net, tmp_path / "m.onnx", 3, 64, 64)
    x = np.random.default_rng(2).standard_normal((3, 3, 64, 64)).astype(np.float32)
    report = parity_check(net, path, x)
    assert report["ok"] and report["checked"] > 10
