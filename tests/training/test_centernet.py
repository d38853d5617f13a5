"""training.centernet: heatmap, size and offset targets."""

from __future__ import annotations

import pytest
import torch


def test_neighbour_regression_cells_point_back_to_the_centre():
    from aqualens.training.centernet import centernet_targets

    boxes = [torch.tensor([[10.0, 10.0, 30.0, 26.0]])]     # centre (20, 18) -> cell (5, 4)
    labels = [torch.tensor([0])]
    one = centernet_targets(boxes, labels, 1, 16, 16, 4)
    nine = centernet_targets(boxes, labels, 1, 16, 16, 4, reg_cells=3)
    assert float(one["mask"].sum()) == 1.0 and torch.equal(one["heat"], nine["heat"])
    m = nine["mask"][0]
    assert m[4, 5] == 1.0 and int((m == 0.5).sum()) == 8
    for jy, jx in zip(*torch.nonzero(m, as_tuple=True)):
        cx = (jx + nine["offset"][0, 0, jy, jx]) * 4
        cy = (jy + nine["offset"][0, 1, jy, jx]) * 4
        assert float(cx) == pytest.approx(20.0) and float(cy) == pytest.approx(18.0)
        assert torch.exp(nine["size"][0, :, jy, jx]).tolist() == pytest.approx([20.0, 16.0])
    # A neighbour never takes over another object's centre cell.
    two = [torch.tensor([[10.0, 10.0, 30.0, 26.0], [22.0, 14.0, 30.0, 22.0]])]
    t = centernet_targets(two, [torch.tensor([0, 0])], 1, 16, 16, 4, reg_cells=3)
    assert t["mask"][0, 4, 6] == 1.0
    assert torch.exp(t["size"][0, :, 4, 6]).tolist() == pytest.approx([8.0, 8.0])
