"""The reference-model splits (``make models`` and bench/train_detect.py share them)."""

from __future__ import annotations

import re

import numpy as np

from aqualens.training.data import Item
from aqualens.training.reference import REFERENCES, detect_splits


def _frames() -> list[Item]:
    items = []
    for v in range(12):
        for f in range(5):
            n = v % 3                                  # videos with 0, 1 or 2 fish a frame
            items.append(Item(name=f"train/{7000 + v}_F{v % 2}_f{f:06d}_jpg.rf.{v}{f}.jpg",
                              boxes=np.zeros((n, 4), np.float32),
                              labels=np.zeros(n, np.int64)))
    return items


def test_video_split_holds_whole_videos_out_and_is_reproducible():
    items = _frames()
    s = detect_splits(items, ["Fish"], by_video=True, seed=0)
    assert set(s) == {"train", "val", "test"}
    assert sorted(sum(s.values(), [])) == sorted(it.name for it in items)
    video = {k: {re.match(r"train/(.*?)_f\d+_", n).group(1) for n in v} for k, v in s.items()}
    assert not (video["train"] & video["test"]) and not (video["train"] & video["val"])
    assert not (video["val"] & video["test"])
    assert 0.1 <= len(s["test"]) / len(items) <= 0.3
    assert s == detect_splits(items, ["Fish"], by_video=True, seed=0)


def test_random_split_mixes_videos():
    s = detect_splits(_frames(), ["Fish"], by_video=False, seed=0)
    video = {k: {re.match(r"train/(.*?)_f\d+_", n).group(1) for n in v} for k, v in s.items()}
    assert video["train"] & video["test"]            # frames of one video on both sides


def test_reference_cards_state_licences():
    assert REFERENCES["plankton-uvp6-classifier"]["licence"] == "GPL-3.0"
    assert REFERENCES["fish-deepfish-detector"]["licence"] == "CC-BY-4.0"
