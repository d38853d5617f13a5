"""Compare two prediction jobs (two model versions, or two runs): agreement per image, changed
labels, and count changes per class, as data and as a PNG bar chart.

Per image, a job's label is that of its highest-scoring annotation; per class, a job's count is
the number of its annotations with that label (for detectors: objects). Only images both jobs
processed successfully are compared for agreement; counts use every annotation of each job.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aqualens.catalog.tables import Annotation, JobResult, Label, User
from aqualens.processing.jobs import get_job


def _labels_by_image(session: Session, job_id: str) -> tuple[dict[int, str], Counter]:
    rows = session.execute(select(Annotation.image_id, Label.name, Annotation.score)
                           .join(Label, Label.id == Annotation.label_id)
                           .where(Annotation.job_id == job_id)).all()
    best: dict[int, tuple[float, str]] = {}
    counts: Counter = Counter()
    for image_id, name, score in rows:
        counts[name] += 1
        s = score if score is not None else 0.0
        if image_id not in best or s > best[image_id][0]:
            best[image_id] = (s, name)
    return {i: name for i, (_, name) in best.items()}, counts


def compare_jobs(session: Session, job_a: str, job_b: str, user: User | None,
                 max_changed: int = 1000) -> dict[str, Any]:
    """Agreement, changed labels and per-class counts of two jobs ``user`` may read."""
    a, b = get_job(session, job_a, user), get_job(session, job_b, user)
    ok = {j.id: set(session.scalars(select(JobResult.image_id)
                                    .where(JobResult.job_id == j.id, JobResult.ok.is_(True))))
          for j in (a, b)}
    common = sorted(ok[a.id] & ok[b.id])
    la, ca = _labels_by_image(session, a.id)
    lb, cb = _labels_by_image(session, b.id)
    same = sum(1 for i in common if la.get(i) == lb.get(i))
    changed = [{"image_id": i, "a": la.get(i), "b": lb.get(i)} for i in common
               if la.get(i) != lb.get(i)]
    transitions = Counter((c["a"], c["b"]) for c in changed)
    per_class = [{"label": name, "a": ca.get(name, 0), "b": cb.get(name, 0),
                  "delta": cb.get(name, 0) - ca.get(name, 0)}
                 for name in sorted(set(ca) | set(cb))]
    return {"job_a": {"id": a.id, "model": a.params.get("model"), "kind": a.kind},
            "job_b": {"id": b.id, "model": b.params.get("model"), "kind": b.kind},
            "common_images": len(common),
            "agreement": (same / len(common)) if common else None,
            "changed_count": len(changed), "changed": changed[:max_changed],
            "transitions": [{"a": x, "b": y, "images": n}
                            for (x, y), n in transitions.most_common()],
            "per_class": per_class}


def compare_plot(report: dict[str, Any]) -> bytes:
    """A PNG: counts per class for job A and job B side by side, agreement in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["per_class"]
    names = [r["label"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5), dpi=100)
    try:
        label_a = report["job_a"].get("model") or report["job_a"]["id"][:8]
        label_b = report["job_b"].get("model") or report["job_b"]["id"][:8]
        ax.bar(x - 0.2, [r["a"] for r in rows], 0.4, label=f"A: {label_a}")
        ax.bar(x + 0.2, [r["b"] for r in rows], 0.4, label=f"B: {label_b}")
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylabel("annotations")
        agreement = report.get("agreement")
        ax.set_title("agreement " + (f"{agreement:.1%}" if agreement is not None else "n/a")
                     + f" on {report['common_images']} images")
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
