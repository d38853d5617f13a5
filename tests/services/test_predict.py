"""services.predict.predict_images: annotations with provenance, idempotent per (job, image)."""

from __future__ import annotations

from sqlalchemy import func, select

from aqualens.catalog.tables import Annotation, JobResult, UsageEvent
from aqualens.catalog.users import get_admin
from aqualens.services.predict import predict_images
from tests.models.nets import add_image, register_classifier


def test_predict_images_stores_annotations_once_per_job(ctx, tmp_path) -> None:  # noqa: ANN001
    from aqualens.processing import jobs

    mid = register_classifier(ctx, tmp_path)
    red, green = add_image(ctx, (250, 0, 0)), add_image(ctx, (0, 250, 0))
    with ctx.session() as s:
        admin = get_admin(s).id
        job_id = jobs.create_job(s, "predict", {"model_id": mid,
                                                "image_ids": [red, green, 999999]},
                                 admin, total=3).id
    out = predict_images(ctx, mid, [red, green, 999999], top_k=2, threshold=0.0,
                         owner_id=admin, job_id=job_id)
    assert [r["ok"] for r in out] == [True, True, False]
    assert out[0]["payload"]["top"][0]["label"] == "Calanoida"
    assert "no image 999999" in out[2]["error"]
    with ctx.session() as s:
        anns = list(s.scalars(select(Annotation).where(Annotation.job_id == job_id)))
        assert len(anns) == 2
        a = next(x for x in anns if x.image_id == red)
        assert (a.status, a.source, a.model_id) == ("predicted", "model", mid)
        assert a.label.name == "Calanoida" and a.label.aphia_id == 1100
        assert a.attributes["model"] == "tiny-plankton@1.0.0"
        assert a.attributes["top_k_setting"] == 2 and len(a.attributes["top_k"]) == 2
        assert s.scalar(select(func.count(JobResult.id))
                        .where(JobResult.job_id == job_id)) == 2
    again = predict_images(ctx, mid, [red, green], top_k=2, threshold=0.0, owner_id=admin,
                           job_id=job_id)
    assert all(r["skipped"] for r in again)
    assert again[0]["payload"]["top"][0]["label"] == "Calanoida"
    with ctx.session() as s:
        assert s.scalar(select(func.count(Annotation.id))
                        .where(Annotation.job_id == job_id)) == 2
        used = s.scalar(select(func.sum(UsageEvent.images))
                        .where(UsageEvent.kind == "predict", UsageEvent.model_id == mid))
        assert used == 2
