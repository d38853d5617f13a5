"""Predict API benchmark (issue 4): one ONNX classifier served three ways.

1. AquaLens (``uvicorn`` subprocess, ``POST /api/v1/models/{id}/predict``, one file each);
2. ``deepaas-run`` (PyPI deepaas 2.6.0) serving the same model wrapped as a DEEPaaS module
   (bench/deepaas_onnx_module.py, found through a throw-away ``deepaas.v2.model`` entry point);
3. a raw onnxruntime loop on the same images (decode + preprocess + run, batch of 1).

N single-image requests from one client over loopback (keep-alive), the same set of distinct
JPEGs cycled in the same order for each target, after warm-up requests that are not counted.
The targets are measured in interleaved rounds (AquaLens, DEEPaaS, raw; then the next round in a
rotated order), so a change in the background load of a shared machine hits all three alike.
AquaLens runs as ``aqualens serve`` would run it without its job runner: one uvicorn process,
uvloop + httptools, log level warning. deepaas-run runs with its defaults.
Prints requests/s, p50 and p99 for each, and the ratios; checks that both servers agree on the
top-1 label of every image.

Workloads (``--workload``):

- ``vignette`` (default; the identify use case): plankton vignettes (greyscale PNG, ~94x60 px,
  ~1.3 KB: the UVP6 sample of the shared data folder when present, else demo/uvp6, else
  generated ones of that size) classified by the reference plankton classifier
  (``aqualens.training.nets.Classifier`` at its defaults, 1 channel, 64x64 letterbox, 0.22 M
  parameters; untrained weights: the cost is the same).
- ``photo`` (the previous setting): 640x480 JPEGs (~118 KB) and a 3-conv CNN at 128x128 RGB.

The client is the standard library's keep-alive ``http.client`` with each multipart body encoded
once (``--client httpx`` for the previous one); ``--concurrency K`` keeps K requests in flight
(K client threads, one connection each), the load a shared service sees.

Usage: ``.venv/bin/python bench/predict_api.py [--n 300] [--concurrency 8]
[--workload vignette|photo] [--server-threads 1]``
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZE = 128  # the photo workload's input size
# Per workload: the model's input spec (as AquaLens' input_spec and as bench/deepaas_onnx_module
# reads it from BENCH_* variables), the image file suffix and media type.
WORKLOADS = {
    "photo": {"size": 128, "channels": 3, "resize": "stretch", "mean": 0.0, "std": 1.0,
              "suffix": ".jpg", "media": "image/jpeg"},
    "vignette": {"size": 64, "channels": 1, "resize": "letterbox", "mean": 0.5, "std": 0.25,
                 "suffix": ".png", "media": "image/png"},
}
UVP6_DIRS = (Path("/work/shared/data/uvp6"), ROOT / "demo" / "uvp6")


def input_spec(workload: str) -> dict:
    w = WORKLOADS[workload]
    return {"height": w["size"], "width": w["size"], "channels": w["channels"],
            "resize": w["resize"], "mean": [w["mean"]] * w["channels"],
            "std": [w["std"]] * w["channels"]}


def deepaas_env(workload: str) -> dict[str, str]:
    w = WORKLOADS[workload]
    return {"BENCH_SIZE": str(w["size"]), "BENCH_CHANNELS": str(w["channels"]),
            "BENCH_RESIZE": w["resize"], "BENCH_MEAN": str(w["mean"]),
            "BENCH_STD": str(w["std"])}


def vignette_sources() -> tuple[str, list[Path]]:
    """The UVP6 vignettes (shared data folder, else the demo sample); [] when neither exists."""
    for folder in UVP6_DIRS:
        files = sorted(folder.glob("*/*.png"))
        if files:
            return str(folder), files
    return "generated", []


def make_vignettes(n: int, seed: int = 0) -> tuple[str, list[bytes]]:
    """``n`` distinct greyscale PNG vignettes: the UVP6 ones, then flipped/rotated copies of
    them (8 dihedral variants; a pixel nudged when a symmetric one would repeat), or generated
    blobs of that size when no sample exists. Returns (source, encoded PNGs)."""
    import hashlib

    import cv2

    source, files = vignette_sources()
    rng = np.random.default_rng(seed)
    if files:
        bases = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    else:  # dark blobs on a light background, ~94x60 like UVP6 vignettes
        bases = []
        for _ in range(200):
            h, w = int(rng.integers(40, 80)), int(rng.integers(60, 120))
            yy, xx = np.mgrid[0:h, 0:w]
            r = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2
            img = 230 - 150 * np.exp(-r) + rng.normal(0, 6, (h, w))
            bases.append(np.clip(img, 0, 255).astype(np.uint8))
    out, seen = [], set()
    k = 0
    while len(out) < n:
        variant, base = divmod(k, len(bases))
        img = bases[base]
        if variant % 8 >= 4:
            img = img[:, ::-1]
        img = np.ascontiguousarray(np.rot90(img, variant % 4))
        if variant >= 8:  # beyond the 8 dihedral copies: a faint brightness change
            img = np.clip(img.astype(np.int16) + (variant // 8), 0, 255).astype(np.uint8)
        data = cv2.imencode(".png", img)[1].tobytes()
        while hashlib.sha256(data).digest() in seen:
            img = img.copy()
            img[0, 0] = (int(img[0, 0]) + 1) % 256
            data = cv2.imencode(".png", img)[1].tobytes()
        seen.add(hashlib.sha256(data).digest())
        out.append(data)
        k += 1
    return source, out


def encode_form(field: str, filename: str, data: bytes, media: str) -> tuple[bytes, str]:
    """A multipart body holding one file, and its Content-Type (httpx's encoder), encoded once
    so the timed loop only sends it."""
    req = httpx.Request("POST", "http://x/", files={field: (filename, data, media)})
    return req.read(), req.headers["content-type"]


def connect(url: str) -> http.client.HTTPConnection:
    """A keep-alive connection to ``http://host:port`` (the standard library's client: about
    0.2 ms a request on loopback, against 0.5 ms for httpx, so the servers are measured)."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60)


def post_form(conn: http.client.HTTPConnection, path: str, body: bytes,
              ctype: str) -> tuple[int, bytes]:
    """POST an encoded form on a keep-alive connection; (status, body)."""
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    return resp.status, resp.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(folder: Path, workload: str = "photo") -> Path:
    """The workload's classifier as ONNX (10 classes), at ``folder/bench.onnx``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    path = folder / "bench.onnx"
    if workload == "vignette":
        from aqualens.training.export import export_onnx
        from aqualens.training.nets import Classifier, NetConfig

        w = WORKLOADS[workload]
        net = Classifier(NetConfig(task="classify", num_classes=10, in_channels=w["channels"]))
        return export_onnx(net.eval(), path, w["channels"], w["size"], w["size"])
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                        nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.onnx.export(net, torch.rand(1, 3, SIZE, SIZE), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"},
                                                             "logits": {0: "n"}}, dynamo=False)
    return path


def make_image(seed: int = 0) -> bytes:
    """A 640x480 JPEG: smooth colour gradients plus noise (compresses like a photo)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / rng.uniform(20, 80) + c * rng.uniform(0, 3))
                     * np.cos(yy / rng.uniform(20, 80)) for c in range(3)], axis=2)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wait(url: str, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def summarise(lat: list[float], busy: float) -> dict:
    lat_ms = np.array(lat) * 1000
    return {"rps": len(lat) / busy, "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99))}


def measure(targets: dict, images: list[bytes], n: int, rounds: int, warmup: int,
            concurrency: int = 1, sequential: tuple[str, ...] = ()) -> dict:
    """``targets``: name -> fn(image bytes) -> top-1 label. Each target gets ``warmup`` uncounted
    calls, then ``n`` timed calls in ``rounds`` interleaved rounds (order rotated each round);
    requests/s is counted over the time spent on that target only. With ``concurrency`` > 1 the
    calls of a round are sent by that many client threads at once (the targets in
    ``sequential`` — the raw loop — always run one call at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    tops: dict[str, list] = {}
    for name, fn in targets.items():
        tops[name] = [fn(im) for im in images]
        for i in range(warmup):
            fn(images[i % len(images)])
    lat: dict[str, list[float]] = {k: [] for k in targets}
    busy = dict.fromkeys(targets, 0.0)
    names = list(targets)
    per = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]

    def timed(fn, image: bytes) -> float:  # noqa: ANN001
        s = time.perf_counter()
        fn(image)
        return time.perf_counter() - s

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        for r, count in enumerate(per):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = targets[name]
                t0 = time.perf_counter()
                if concurrency > 1 and name not in sequential:
                    lat[name].extend(pool.map(lambda i, fn=fn: timed(fn, images[i % len(images)]),
                                              range(count)))
                else:
                    lat[name].extend(timed(fn, images[i % len(images)]) for i in range(count))
                busy[name] += time.perf_counter() - t0
    out = {k: summarise(lat[k], busy[k]) for k in targets}
    out["top1"] = tops
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="timed requests per target")
    ap.add_argument("--images", type=int, default=None,
                    help="distinct images, cycled (default: 16 photos, 64 vignettes)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=20, help="uncounted requests per target")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="vignette",
                    help="vignette: UVP6 vignettes + reference plankton CNN (default); "
                         "photo: 640x480 JPEGs + 3-conv CNN at 128x128")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="requests in flight at once from the client (threads, each with its "
                         "own keep-alive connection); 1 = one request after the other")
    ap.add_argument("--client", choices=("http.client", "httpx"), default="http.client",
                    help="the HTTP client: the standard library's keep-alive HTTPConnection "
                         "with each multipart body encoded once (default: ~0.2 ms a request, "
                         "so the servers are measured), or httpx (~0.5 ms a request)")
    ap.add_argument("--server-threads", type=int, default=None,
                    help="also measure a second AquaLens server started with "
                         "AQUALENS_MODELS__INTRA_OP_THREADS=N (the first keeps the default)")
    args = ap.parse_args()
    wl = WORKLOADS[args.workload]
    if args.images is None:
        args.images = 64 if args.workload == "vignette" else 16
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    # Built in a child process: torch (and its OpenMP threads) stays out of the process that
    # runs the client and the raw loop.
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    f"sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                    f"from predict_api import build_model; build_model(Path({str(work)!r}), "
                    f"{args.workload!r})"],
                   check=True, capture_output=True)
    model = work / "bench.onnx"
    if args.workload == "vignette":
        source, images = make_vignettes(args.images)
    else:
        source, images = "generated 640x480 JPEGs", [make_image(seed)
                                                      for seed in range(args.images)]
    fname = "x" + wl["suffix"]
    procs = []
    try:
        # --- AquaLens ------------------------------------------------------------------
        data = work / "aqualens-data"
        env = {**os.environ, "AQUALENS_DATA_DIR": str(data)}
        setup = (
            "from pathlib import Path\n"
            "from aqualens.catalog.context import Context\n"
            "from aqualens.catalog.instance import init_instance\n"
            "from aqualens.catalog.users import get_admin\n"
            "from aqualens.models.base import ModelInfo\n"
            "from aqualens.models.registry import register_model\n"
            "ctx = Context(); init_instance(ctx)\n"
            "info = ModelInfo(name='bench', version='1.0.0', task='classify',\n"
            f"    labels=[f'class_{{i}}' for i in range(10)], "
            f"input_spec={input_spec(args.workload)!r})\n"
            "with ctx.session() as s:\n"
            f"    m = register_model(s, ctx.store, Path({str(model)!r}), info, get_admin(s).id,"
            " visibility='public'); print(m.id)\n")
        mid = subprocess.run([sys.executable, "-c", setup], env=env, check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        urls = {}
        servers = {"aqualens": env}
        if args.server_threads is not None:
            servers[f"aqualens_threads{args.server_threads}"] = {
                **env, "AQUALENS_MODELS__INTRA_OP_THREADS": str(args.server_threads)}
        for name, senv in servers.items():
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "aqualens.api.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop",
                 "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"],
                env=senv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[name] = f"http://127.0.0.1:{port}"
            wait(f"{urls[name]}/api/v1/health")
        # --- deepaas-run -----------------------------------------------------------------
        dist = work / "eps" / "bench_onnx-1.0.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-onnx\n"
                                       "Version: 1.0.0\n")
        (dist / "entry_points.txt").write_text("[deepaas.v2.model]\n"
                                               "bench-onnx = deepaas_onnx_module\n")
        dport = free_port()
        denv = {**os.environ, "BENCH_ONNX_MODEL": str(model), **deepaas_env(args.workload),
                "DEEPAAS_V2_MODEL": "bench-onnx",
                "PYTHONPATH": os.pathsep.join([str(work / "eps"), str(ROOT / "bench")])}
        procs.append(subprocess.Popen(
            [str(BIN / "deepaas-run"), "--listen-ip", "127.0.0.1", "--listen-port", str(dport)],
            env=denv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dp_url = f"http://127.0.0.1:{dport}"
        wait(f"{dp_url}/v2/models/bench-onnx/")

        # --- raw onnxruntime loop -----------------------------------------------------------
        import onnxruntime as ort

        sys.path.insert(0, str(ROOT / "bench"))
        from deepaas_onnx_module import prep, read

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        labels = [f"class_{i}" for i in range(10)]

        def raw(image: bytes) -> str:  # decode + the same preprocessing + onnxruntime, batch 1
            x = np.ascontiguousarray(prep(read(image, wl["channels"]), wl)[None])
            return labels[int(np.argmax(sess.run(None, {"input": x})[0][0]))]

        local = threading.local()  # one keep-alive connection per target and client thread
        opened: list = []

        bodies = {f: {im: encode_form(f, fname, im, wl["media"]) for im in images}
                  for f in ("files", "data")}

        def post(url: str, path: str, field: str, image: bytes) -> tuple[int, bytes]:
            conns = local.__dict__.setdefault("conns", {})
            if url not in conns:
                conns[url] = httpx.Client(base_url=url, timeout=60) if args.client == "httpx" \
                    else connect(url)
                opened.append(conns[url])
            conn = conns[url]
            if args.client == "httpx":
                r = conn.post(path, files={field: (fname, image, wl["media"])})
                return r.status_code, r.content
            return post_form(conn, path, *bodies[field][image])

        def aql_of(url: str):  # noqa: ANN202
            def aql(image: bytes) -> str:
                status, body = post(url, f"/api/v1/models/{mid}/predict", "files", image)
                assert status == 200, body
                return json.loads(body)["results"][0]["result"]["top"][0]["label"]
            return aql

        def dp(image: bytes) -> str:
            status, body = post(dp_url, "/v2/models/bench-onnx/predict/", "data", image)
            assert status == 200, body
            doc = json.loads(body)
            return (doc.get("predictions", doc))["labels"][0]

        targets = {name: aql_of(url) for name, url in urls.items()}
        targets.update(deepaas=dp, raw_onnxruntime=raw)
        try:
            res = measure(targets, images, args.n, args.rounds, args.warmup,
                          args.concurrency, sequential=("raw_onnxruntime",))
        finally:
            for c in opened:
                c.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    tops = res.pop("top1")
    agree = sum(len(set(labels)) == 1 for labels in zip(*tops.values()))
    print(f"top-1 label identical for {agree}/{len(images)} images across all targets")
    res_aql, res_dp, res_raw = res["aqualens"], res["deepaas"], res["raw_onnxruntime"]
    out = {"workload": args.workload, "image_source": source,
           "image_bytes_mean": float(np.mean([len(i) for i in images])),
           "n": args.n, "client": args.client, "concurrency": args.concurrency, "images": args.images, "rounds": args.rounds, "warmup": args.warmup,
           "top1_agree": agree, "load_avg": os.getloadavg(), "aqualens": res_aql, "deepaas": res_dp,
           "raw_onnxruntime": res_raw,
           "ratio_rps_aqualens_vs_deepaas": res_aql["rps"] / res_dp["rps"],
           "ratio_p99_aqualens_vs_deepaas": res_aql["p99_ms"] / res_dp["p99_ms"],
           "ratio_rps_aqualens_vs_raw": res_aql["rps"] / res_raw["rps"]}
    for k, r in res.items():
        out[k] = r
        print(f"{k:20s} {r['rps']:8.1f} req/s   p50 {r['p50_ms']:7.2f} ms   "
              f"p99 {r['p99_ms']:7.2f} ms")
        if k.startswith("aqualens_"):
            out[f"ratio_rps_{k}_vs_deepaas"] = r["rps"] / res_dp["rps"]
            out[f"ratio_p99_{k}_vs_deepaas"] = r["p99_ms"] / res_dp["p99_ms"]
            print(f"  {k} / DEEPaaS throughput {r['rps'] / res_dp['rps']:.2f}x, "
                  f"p99 ratio {r['p99_ms'] / res_dp['p99_ms']:.2f}")
    print(f"AquaLens / DEEPaaS throughput: {out['ratio_rps_aqualens_vs_deepaas']:.2f}x "
          f"(target >= 3x); p99 ratio {out['ratio_p99_aqualens_vs_deepaas']:.2f} "
          f"(target <= 1); AquaLens / raw loop: {out['ratio_rps_aqualens_vs_raw']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
