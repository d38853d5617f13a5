"""The bulk writes of a predict batch on both catalogue backends: (job, image) result rows in one
INSERT ... ON CONFLICT DO NOTHING RETURNING (SQLite) or one JSON array (PostgreSQL), annotations
in one executemany (SQLite) or COPY (PostgreSQL), labels in one query."""

from __future__ import annotations

from sqlalchemy import select

from aqualens.catalog.labels import add_synonym, get_or_create_label
from aqualens.catalog.tables import Annotation, Label
from aqualens.processing import jobs
from aqualens.processing.predict import write_annotations

from .helpers import add_images, admin_id


def _payload(label: str, aphia: int | None = None) -> dict:
    return {"task": "classify", "top": [{"label": label, "aphia_id": aphia, "score": 0.9,
                                         "index": 0}]}


def test_bulk_results_and_annotations(any_ctx) -> None:
    ctx, _ = any_ctx
    _, ids = add_images(ctx, [10, 20, 30, 40])
    owner = admin_id(ctx)
    with ctx.session() as s:
        job_id = jobs.create_job(s, "image-stats", {"collection": "cam1"}, owner).id
        known = get_or_create_label(s, "Calanoida", 1100).id
        oithona = get_or_create_label(s, "Oithona").id  # no AphiaID yet: the batch fills it in
        add_synonym(s, s.get(Label, known), "calanoid copepod")
    with ctx.session() as s:
        first = [{"image_id": i, "ok": True} for i in ids[:2]]
        # A repeated image in one call counts once; an existing row is not inserted again.
        assert sorted(jobs.insert_results(s, job_id, first + first[:1])) == ids[:2]
        assert jobs.insert_results(s, job_id, first) == []
        assert jobs.insert_results(s, job_id, [{"image_id": ids[1], "ok": True},
                                               {"image_id": ids[2], "ok": False,
                                                "error": "bad"}]) == [ids[2]]
        results = [{"image_id": ids[0], "payload": _payload("Calanoida", 1100)},
                   {"image_id": ids[1], "payload": _payload("calanoid copepod")},
                   {"image_id": ids[2], "payload": _payload("Oithona", 106485)},
                   {"image_id": ids[3], "payload": _payload("new-taxon")}]
        assert write_annotations(s, job_id=job_id, model_id=None, owner_id=owner,
                                 results=results) == 4
    with ctx.session() as s:
        rows = {a.image_id: a for a in s.scalars(select(Annotation)
                                                 .where(Annotation.job_id == job_id))}
        assert rows[ids[0]].label_id == known and rows[ids[1]].label_id == known  # synonym
        assert rows[ids[2]].label_id == oithona
        assert s.get(Label, oithona).aphia_id == 106485
        new = s.scalar(select(Label).where(Label.name == "new-taxon"))
        assert rows[ids[3]].label_id == new.id
        a = rows[ids[0]]
        assert (a.status, a.source, a.is_current, a.geometry_type, a.owner_id) == \
            ("predicted", "model", True, "none", owner)
        assert a.attributes["top_k"][0]["label"] == "Calanoida" and a.created_at is not None
