"""Train/val/test splits: stratified by label, group-aware, reproducible from a seed, or given.

Group-awareness keeps every image of a sample, station, acquisition or video in one split, so
near-duplicate frames cannot leak from train into test. Groups come from a metadata key or a
regular expression over the image name (see :func:`aqualens.training.data.group_of`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from aqualens.core.errors import ValidationError

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    """Fractions must be non-negative and sum to 1 (within rounding)."""
    if not fractions:
        raise ValidationError("no split fractions given", field="fractions",
                              valid="e.g. train=0.8,val=0.1,test=0.1")
    for name, f in fractions.items():
        if not isinstance(f, (int, float)) or f < 0 or f > 1:
            raise ValidationError(f"fraction of {name!r} must be in [0, 1], got {f!r}",
                                  field="fractions")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValidationError(f"split fractions sum to {total:g}, not 1", field="fractions",
                              valid="fractions summing to 1, e.g. 0.8/0.1/0.1")
    return dict(fractions)


def parse_fractions(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` or ``"80/10/10"`` (train/val/test) -> fractions."""
    text = text.strip()
    try:
        if "=" in text:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            out = {k.strip(): float(v) for k, v in pairs}
        else:
            vals = [float(v) for v in text.replace(",", "/").split("/")]
            names = ["train", "val", "test"][:len(vals)] if len(vals) <= 3 else None
            if names is None:
                raise ValueError
            out = dict(zip(names, vals))
    except ValueError:
        raise ValidationError(f"cannot read split fractions {text!r}", field="split",
                              valid="train=0.8,val=0.1,test=0.1 or 80/10/10") from None
    total = sum(out.values())
    if total > 1.5:                      # given as percentages
        out = {k: v / 100 for k, v in out.items()}
    return check_fractions(out)


def _stratum(labels: Sequence[str], freq: Counter) -> str:
    """One label per image for stratification: its rarest label (empty images: '')."""
    if not labels:
        return ""
    return min(labels, key=lambda lab: (freq[lab], lab))


def make_splits(keys: Sequence[str], labels: Sequence[Sequence[str]], *,
                groups: Sequence[str] | None = None,
                fractions: dict[str, float] | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Assign each key to a split.

    ``labels[i]`` are the label names of image i (one for classification, those of its boxes for
    detection). With ``groups``, all keys of a group land in the same split. Within each stratum
    (the rarest label of an image; for a group, the most common stratum of its images) groups are
    shuffled with ``seed``, the largest placed first, each into the split furthest below its
    target size. Small strata therefore fill ``train`` first.
    """
    fractions = check_fractions(fractions or DEFAULT_FRACTIONS)
    if len(labels) != len(keys) or (groups is not None and len(groups) != len(keys)):
        raise ValidationError("keys, labels and groups differ in length", field="splits")
    if len(set(keys)) != len(keys):
        raise ValidationError("duplicate keys cannot be split", field="splits")
    freq = Counter(lab for labs in labels for lab in set(labs))
    members: dict[str, list[int]] = defaultdict(list)
    for i in range(len(keys)):
        members[groups[i] if groups is not None else f"\0{i}"].append(i)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g, idx in members.items():
        strata = Counter(_stratum(labels[i], freq) for i in idx)
        top = max(strata.items(), key=lambda kv: (kv[1], kv[0]))[0]
        by_stratum[top].append(g)
    rng = random.Random(seed)
    names = list(fractions)
    out: dict[str, list[str]] = {n: [] for n in names}
    for stratum in sorted(by_stratum):
        gs = sorted(by_stratum[stratum])
        rng.shuffle(gs)
        gs.sort(key=lambda g: -len(members[g]))       # stable: ties keep the shuffled order
        total = sum(len(members[g]) for g in gs)
        count = dict.fromkeys(names, 0)
        for g in gs:
            best = max(names, key=lambda n: (fractions[n] * total - count[n], -names.index(n))
                       if fractions[n] > 0 else (float("-inf"), 0))
            count[best] += len(members[g])
            out[best].extend(keys[i] for i in members[g])
    return {n: sorted(v) for n, v in out.items()}


def splits_from_files(files: dict[str, Path], keys: Sequence[str],
                      aliases: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Splits given by the user: one file per split, one image name or sha256 per line
    (blank lines and ``#`` comments ignored). See :func:`splits_from_lists`."""
    lists = {}
    for split, path in files.items():
        path = Path(path)
        if not path.is_file():
            raise ValidationError("split file not found", field=str(path))
        lists[split] = path.read_text().splitlines()
    return splits_from_lists(lists, keys, aliases,
                             where={k: Path(v).name for k, v in files.items()})


def splits_from_lists(lists: dict[str, Sequence[str]], keys: Sequence[str],
                      aliases: dict[str, str] | None = None,
                      where: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Splits given as ``{split: [image name or sha256, ...]}``.

    ``aliases`` maps names (original file names) to keys. Unknown entries and images named in
    two splits are refused, naming the file (or split) and line; images in no split stay out of
    every split.
    """
    known = set(keys)
    aliases = aliases or {}
    where = where or {}
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    if not lists:
        raise ValidationError("no splits given", field="splits")
    for split, entries in lists.items():
        if not isinstance(entries, (list, tuple)):
            raise ValidationError(f"split {split!r} must be a list of names", field="splits")
        out[split] = []
        for ln, line in enumerate(entries, 1):
            entry = str(line).strip()
            if not entry or entry.startswith("#"):
                continue
            key = entry if entry in known else aliases.get(entry) or aliases.get(Path(entry).name)
            if entry.startswith("sha256:") and entry[7:] in known:
                key = entry[7:]
            loc = f"{where.get(split, split)}:{ln}"
            if key is None:
                raise ValidationError(f"{entry!r} is not an image of this dataset", field=loc,
                                      valid="an image name or sha256 of the frozen images")
            if key in seen:
                raise ValidationError(f"{entry!r} is already in split {seen[key]!r}", field=loc)
            seen[key] = split
            out[split].append(key)
    return {n: sorted(v) for n, v in out.items()}


def split_summary(splits: dict[str, list[str]], label_of: dict[str, Sequence[str]]
                  ) -> dict[str, dict[str, int]]:
    """Per split: image count and per-label counts (for `datasets show`)."""
    out = {}
    for name, keys in splits.items():
        c = Counter(lab for k in keys for lab in set(label_of.get(k, ())))
        out[name] = {"images": len(keys), **dict(sorted(c.items()))}
    return out
