"""Splits: stratified, reproducible, group-aware, given by files."""

from __future__ import annotations

from collections import Counter

import pytest

from aqualens.core.errors import ValidationError
from aqualens.training.splits import (make_splits, parse_fractions, splits_from_files,
                                      splits_from_lists)


def _data(n_per: dict[str, int]):  # noqa: ANN202
    keys, labels = [], []
    for lab, n in n_per.items():
        for i in range(n):
            keys.append(f"{lab}-{i}")
            labels.append([lab])
    return keys, labels


def test_stratified_80_10_10_per_label():
    keys, labels = _data({"a": 100, "b": 50, "c": 20})
    sp = make_splits(keys, labels, seed=1)
    assert sorted(k for v in sp.values() for k in v) == sorted(keys)
    for lab, n in {"a": 100, "b": 50, "c": 20}.items():
        got = {s: sum(k.startswith(lab + "-") for k in v) for s, v in sp.items()}
        assert got == {"train": n * 8 // 10, "val": n // 10, "test": n // 10}


def test_reproducible_from_seed_and_seed_changes_it():
    keys, labels = _data({"a": 40, "b": 40})
    assert make_splits(keys, labels, seed=7) == make_splits(keys, labels, seed=7)
    assert make_splits(keys, labels, seed=7) != make_splits(keys, labels, seed=8)


def test_group_aware_keeps_groups_together():
    keys, labels = _data({"a": 60, "b": 60})
    groups = [f"station{i % 12}" for i in range(len(keys))]
    sp = make_splits(keys, labels, groups=groups, seed=3)
    where = {k: s for s, v in sp.items() for k in v}
    by_group: dict[str, set[str]] = {}
    for k, g in zip(keys, groups):
        by_group.setdefault(g, set()).add(where[k])
    assert all(len(v) == 1 for v in by_group.values())
    sizes = Counter(where.values())
    assert sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0


def test_bad_fractions_and_inputs_are_refused():
    keys, labels = _data({"a": 5})
    with pytest.raises(ValidationError, match="sum to 0.9"):
        make_splits(keys, labels, fractions={"train": 0.8, "test": 0.1})
    with pytest.raises(ValidationError, match="duplicate"):
        make_splits(["x", "x"], [["a"], ["a"]])
    assert parse_fractions("80/10/10") == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert parse_fractions("train=0.7,test=0.3") == {"train": 0.7, "test": 0.3}
    with pytest.raises(ValidationError) as e:
        parse_fractions("eighty")
    assert e.value.field == "split"


def test_split_files(tmp_path):
    keys = ["s1", "s2", "s3"]
    aliases = {"a.png": "s1", "b.png": "s2", "c.png": "s3"}
    (tmp_path / "train.txt").write_text("a.png\n# comment\nsha256:s2\n")
    (tmp_path / "test.txt").write_text("c.png\n")
    sp = splits_from_files({"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"},
                           keys, aliases)
    assert sp == {"train": ["s1", "s2"], "test": ["s3"]}
    (tmp_path / "bad.txt").write_text("a.png\nnope.png\n")
    with pytest.raises(ValidationError) as e:
        splits_from_files({"train": tmp_path / "bad.txt"}, keys, aliases)
    assert e.value.field == "bad.txt:2" and "nope.png" in str(e.value)
    with pytest.raises(ValidationError, match="already in split"):
        splits_from_lists({"train": ["a.png"], "test": ["s1"]}, keys, aliases)
