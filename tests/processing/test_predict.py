"""Batch predict jobs with a real ONNX model: annotations side by side, compare, exactly once."""

from __future__ import annotations

import pytest

from aqualens.catalog.tables import Annotation, JobResult, UsageEvent
from aqualens.core.errors import NotFound, ValidationError
from aqualens.processing import jobs
from aqualens.processing.runner import Runner

from .helpers import add_images, admin_id, register_brightness_model, wait_state


@pytest.fixture
def runner(ctx):
    r = Runner(ctx, poll_s=0.05, heartbeat_s=0.2).start()
    yield r
    r.stop()


def test_predict_job_and_versions_side_by_side(ctx, runner, tmp_path):
    _, ids = add_images(ctx, [10, 60, 100, 140, 200, 250], missing_blob=(5,))
    m1 = register_brightness_model(ctx, tmp_path, "1.0.0")
    # v2 sees images brighter (mean shifted): 100 (0.39) flips to bright
    m2 = register_brightness_model(ctx, tmp_path, "2.0.0", threshold_shift=-0.15)
    with ctx.session() as s:
        a = jobs.create_job(s, "predict", {"model": "bright@1.0.0", "collection": "cam1",
                                           "top_k": 2, "batch_size": 4}, admin_id(ctx)).id
        b = jobs.create_job(s, "predict", {"model": "bright@2.0.0", "collection": "cam1"},
                            admin_id(ctx)).id
    ja = wait_state(ctx, a, ("succeeded", "failed"))
    jb = wait_state(ctx, b, ("succeeded", "failed"))
    assert ja["state"] == jb["state"] == "succeeded"
    assert (ja["done"], ja["failed"]) == (5, 1)
    assert ja["params"]["model_id"] == m1 and jb["params"]["model_id"] == m2
    assert ja["outputs"]["counts"] == {"dark": 3, "bright": 2}
    with ctx.session() as s:
        for job_id, model_id in ((a, m1), (b, m2)):
            anns = s.query(Annotation).filter_by(job_id=job_id).all()
            assert len(anns) == 5 and {x.model_id for x in anns} == {model_id}
            assert {x.status for x in anns} == {"predicted"} and {x.source for x in anns} == {"model"}
        top = s.query(Annotation).filter_by(job_id=a, image_id=ids[0]).one()
        assert top.label.name == "dark" and len(top.attributes["top_k"]) == 2
        bad = s.query(JobResult).filter_by(job_id=a, ok=False).one()
        assert bad.image_id == ids[5] and "cannot decode" in bad.error
        usage = s.query(UsageEvent).filter_by(job_id=a).all()
        assert sum(u.images for u in usage) == 5 and {u.model_id for u in usage} == {m1}
        assert {u.kind for u in usage} == {"predict"}

    from aqualens.processing.compare import compare_jobs

    with ctx.session() as s:
        report = compare_jobs(s, a, b, s.get(jobs.User, admin_id(ctx)))
    assert report["common_images"] == 5
    assert report["changed"] == [{"image_id": ids[2], "a": "dark", "b": "bright"}]
    assert report["agreement"] == pytest.approx(4 / 5)
    per = {r["label"]: r for r in report["per_class"]}
    assert per["bright"]["a"] == 2 and per["bright"]["b"] == 3 and per["bright"]["delta"] == 1
    assert per["dark"]["delta"] == -1


def test_predict_params_are_checked(ctx, tmp_path):
    register_brightness_model(ctx, tmp_path)
    with ctx.session() as s:
        owner = admin_id(ctx)
        with pytest.raises(NotFound, match="no model 'fish'"):
            jobs.create_job(s, "predict", {"model": "fish", "collection": "c"}, owner)
        with pytest.raises(ValidationError, match="a model is required"):
            jobs.create_job(s, "predict", {"collection": "c"}, owner)
        with pytest.raises(ValidationError) as err:
            jobs.create_job(s, "predict", {"model": "bright", "top_k": 0, "collection": "c"}, owner)
        assert err.value.field == "top_k"
        with pytest.raises(ValidationError) as err:
            jobs.create_job(s, "predict", {"model": "bright", "threshold": 2, "collection": "c"},
                            owner)
        assert err.value.field == "threshold"
        with pytest.raises(ValidationError, match="exactly one of"):
            jobs.create_job(s, "predict", {"model": "bright"}, owner)
        with pytest.raises(ValidationError, match="exactly one of"):
            jobs.create_job(s, "predict", {"model": "bright", "collection": "c",
                                           "image_ids": [1]}, owner)
        for bad in (0, "512", True, 100_001):
            with pytest.raises(ValidationError, match="chunk_size must be an integer") as err:
                jobs.create_job(s, "predict", {"model": "bright", "collection": "c",
                                               "chunk_size": bad}, owner)
            assert err.value.field == "chunk_size"


def test_a_task_predicts_its_chunk_in_model_batches(ctx, runner, tmp_path, monkeypatch):
    """Tasks carry chunks of ``chunk_size`` images; the worker decodes and predicts each chunk
    ``batch_size`` images at a time, so only one batch is ever decoded in memory, and a bad image
    fails alone."""
    from aqualens.models.tensor_runtime import TensorRuntime

    _, ids = add_images(ctx, [10, 60, 100, 140, 200, 250, 30], missing_blob=(3,))
    register_brightness_model(ctx, tmp_path)
    calls: list[int] = []
    real = TensorRuntime.predict

    def spy(self, images, **kw):
        calls.append(len(images))
        return real(self, images, **kw)

    monkeypatch.setattr(TensorRuntime, "predict", spy)
    with ctx.session() as s:
        job_id = jobs.create_job(s, "predict", {"model": "bright", "collection": "cam1",
                                                "batch_size": 2, "chunk_size": 4},
                                 admin_id(ctx)).id
    job = wait_state(ctx, job_id, ("succeeded", "failed"))
    assert job["state"] == "succeeded" and (job["done"], job["failed"]) == (6, 1)
    assert sum(job["outputs"]["batches_per_worker"].values()) == 2  # 7 images, chunks of 4
    assert max(calls) == 2 and sum(calls) == 6  # the missing blob never reaches the model
    with ctx.session() as s:
        logs = [entry.message for entry in jobs.get_logs(s, job_id)]
        assert any("2 tasks of up to 4" in m for m in logs), logs
        assert s.query(Annotation).filter_by(job_id=job_id).count() == 6
        bad = s.query(JobResult).filter_by(job_id=job_id, ok=False).one()
        assert bad.image_id == ids[3] and "cannot decode" in bad.error


def test_compare_plot_is_png():
    from aqualens.processing.compare import compare_plot

    png = compare_plot({"job_a": {"id": "a" * 36, "model": "m@1"}, "job_b": {"id": "b" * 36},
                        "common_images": 0, "agreement": None,
                        "per_class": [{"label": "x", "a": 1, "b": 2, "delta": 1}]})
    assert png.startswith(b"\x89PNG")
