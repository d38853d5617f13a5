"""Tiny generated datasets for the training tests (no files outside the repo)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image as PILImage

from aqualens.catalog.annotations import add_annotation
from aqualens.catalog.collections import get_or_create_collection
from aqualens.catalog.labels import get_or_create_label
from aqualens.catalog.tables import CollectionImage, Image, User


def classify_image(label: int, seed: int, size: int = 32) -> np.ndarray:
    """Class 0: a bright disc; class 1: a bright horizontal bar; class 2: a vertical bar."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 30, (size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2 + rng.integers(-3, 4, 2)
    if label == 0:
        img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size // 5) ** 2] = 220
    elif label == 1:
        img[c[0] - 2:c[0] + 2, 4:size - 4] = 220
    else:
        img[4:size - 4, c[1] - 2:c[1] + 2] = 220
    return img


def detect_image(seed: int, size: int = 64) -> tuple[np.ndarray, list[list[float]]]:
    """Dark RGB frame with 0-2 bright squares; boxes as [x, y, w, h]."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    boxes = []
    for _ in range(int(rng.integers(0, 3))):
        w = int(rng.integers(8, 16))
        x, y = (int(v) for v in rng.integers(0, size - w, 2))
        if any(abs(x - b[0]) < 16 and abs(y - b[1]) < 16 for b in boxes):
            continue
        img[y:y + w, x:x + w] = (230, 200, 60)
        boxes.append([float(x), float(y), float(w), float(w)])
    return img, boxes


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def add_image(session, store, owner: User, collection: str, data: bytes, name: str,  # noqa: ANN001
              width: int, height: int, **fields) -> Image:  # noqa: ANN003
    sha = hashlib.sha256(data).hexdigest()
    store.put_bytes(data)
    row = Image(sha256=sha, size=len(data), width=width, height=height, format="PNG",
                owner_id=owner.id, original_name=name, **fields)
    session.add(row)
    session.flush()
    coll = get_or_create_collection(session, collection, owner)
    session.add(CollectionImage(collection_id=coll.id, image_id=row.id, original_name=name))
    session.flush()
    return row


def make_classify_collection(ctx, owner: User, name: str = "vignettes", n: int = 30,  # noqa: ANN001
                             classes: tuple[str, ...] = ("disc", "hbar", "vbar"),
                             size: int = 32, status: str = "validated",
                             station_every: int | None = None, seed: int = 0) -> list[int]:
    """``n`` greyscale vignettes, labels cycling through ``classes``, annotated image-level."""
    store = ctx.store
    out = []
    with ctx.session() as s:
        labels = [get_or_create_label(s, c) for c in classes]
        for i in range(n):
            k = i % len(classes)
            fields = {}
            if station_every:
                fields["station"] = f"st{i // station_every}"
            img = add_image(s, store, owner, name, png(classify_image(k, seed + i, size)),
                            f"{classes[k]}_{i:03d}.png", size, size, **fields)
            add_annotation(s, img.id, label_id=labels[k].id, status=status, owner_id=owner.id)
            out.append(img.id)
    return out


def make_detect_collection(ctx, owner: User, name: str = "frames", n: int = 30,  # noqa: ANN001
                           size: int = 64) -> list[int]:
    """``n`` RGB frames with box annotations of label ``fish``; names ``vidK_f00000N.png``."""
    store = ctx.store
    out = []
    with ctx.session() as s:
        fish = get_or_create_label(s, "fish")
        for i in range(n):
            arr, boxes = detect_image(i, size)
            img = add_image(s, store, owner, name, png(arr), f"vid{i % 5}_f{i:06d}.png",
                            size, size)
            for b in boxes:
                add_annotation(s, img.id, label_id=fish.id, geometry_type="box", geometry=b,
                               owner_id=owner.id)
            out.append(img.id)
    return out


def trained_like_detector(flip_test: bool):  # noqa: ANN201 - torch.nn.Module
    """A small untrained detector whose heatmap has distinct peaks, as a trained one's has."""
    import torch

    from aqualens.training.nets import NetConfig, build_net

    torch.manual_seed(0)
    net = build_net(NetConfig(task="detect", num_classes=2, max_detections=15,
                              dense_head=True, flip_test=flip_test)).eval()
    with torch.no_grad():
        net.heat.bias.fill_(0.0)
        net.heat.weight.mul_(20)
    return net
