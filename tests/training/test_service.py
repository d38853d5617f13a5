"""Training jobs end to end on the processing engine: lineage, metrics, fine-tuning, evaluation."""

from __future__ import annotations

import pytest

from aqualens.catalog.tables import Job, Model
from aqualens.catalog.users import get_admin
from aqualens.core.errors import NotFound, ValidationError
from aqualens.processing import jobs
from aqualens.processing.runner import run_job_now
from aqualens.training.datasets import freeze
from aqualens.training.model_eval import evaluate_model
from aqualens.training.service import start_training
from tests.training.helpers import make_classify_collection, make_detect_collection

FAST = {"epochs": 2, "input_size": 32, "batch_size": 8, "threads": 1}


@pytest.fixture
def admin(ctx):  # noqa: ANN001, ANN201
    with ctx.session() as s:
        user = get_admin(s)
        s.expunge(user)
    return user


def _run(ctx, admin, **kw):  # noqa: ANN001, ANN003, ANN202
    with ctx.session() as s:
        job_id = start_training(s, admin, **kw).id
    run_job_now(ctx, job_id)
    with ctx.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
    assert job.state == "succeeded", job.error
    return job


def test_train_registers_model_with_lineage_then_finetune_and_evaluate(ctx, admin):
    make_classify_collection(ctx, admin, n=30)
    with ctx.session() as s:
        dv_id = freeze(s, admin, "vig", collection="vignettes").id
    job = _run(ctx, admin, dataset="vig@1", **FAST)
    out = job.outputs
    assert out["model"] == "vig-classify@1.0.0" and out["eval_split"] == "test"
    assert set(out["metrics"]) >= {"accuracy", "balanced_accuracy", "macro_f1"}
    with ctx.session() as s:
        m = s.get(Model, out["model_id"])
        assert (m.dataset_version_id, m.job_id) == (dv_id, job.id)
        assert m.metrics["dataset_version_id"] == dv_id and m.metrics["split"] == "test"
        assert set(m.metrics["per_class"]) == {"disc", "hbar", "vbar"}
        assert len(m.metrics["confusion_matrix"]["matrix"]) == 3
        assert {"checkpoint.pt", "confusion_matrix.png"} <= set(m.files)
        assert m.params["manifest_sha256"] and len(m.params["history"]) == 2
        assert m.params["parity"]["ok"] and m.input_spec["channels"] == 1
        assert "## Licence" in m.card and "vig@1" in m.card
        logs = [line.message for line in jobs.get_logs(s, job.id)]
    assert any(msg.startswith("epoch 2/2 loss") for msg in logs)

    # fine-tune on an extended label set
    make_classify_collection(ctx, admin, n=6, classes=("ring",), size=32, seed=1000)
    with ctx.session() as s:
        freeze(s, admin, "vig", collection="vignettes")
    job2 = _run(ctx, admin, dataset="vig@2", base_model="vig-classify@1.0.0", **FAST)
    with ctx.session() as s:
        m2 = s.get(Model, job2.outputs["model_id"])
        assert m2.version == "1.1.0" and m2.params["base_model"] == "vig-classify@1.0.0"
        assert [lab["name"] for lab in m2.labels] == ["disc", "hbar", "ring", "vbar"]

    res = evaluate_model(ctx, "vig-classify@1.0.0", "vig@1", admin, split="val")
    assert res["split"] == "val" and "accuracy" in res["overall"]
    with ctx.session() as s:
        ev = s.get(Model, out["model_id"]).metrics["evaluations"]
        assert "vig@1:val" in ev and ev["vig@1:val"]["plots"]["confusion_matrix.png"]


def test_bad_training_requests(ctx, admin):
    make_classify_collection(ctx, admin, n=6)
    with ctx.session() as s:
        freeze(s, admin, "vig", collection="vignettes")
        with pytest.raises(NotFound):
            start_training(s, admin, "nope@1")
        with pytest.raises(ValidationError) as e:
            start_training(s, admin, "vig@1", colour="blue")
        assert e.value.field == "colour"
        with pytest.raises(ValidationError) as e:
            start_training(s, admin, "vig@1", epochs=0)
        assert e.value.field == "epochs"
        with pytest.raises(ValidationError) as e:
            start_training(s, admin, "vig@1", task="segment")
        assert e.value.field == "task"
        with pytest.raises(ValidationError) as e:
            start_training(s, admin, "vig@1", input_size=33)
        assert e.value.field == "input_size"
        with pytest.raises(ValidationError) as e:
            start_training(s, admin, "vig@1", flip_test="yes")
        assert e.value.field == "flip_test" and "true, false" in e.value.valid
        with pytest.raises(NotFound):
            start_training(s, admin, "vig@1", base_model="ghost@1.0.0")


@pytest.mark.slow
def test_detection_job(ctx, admin):
    make_detect_collection(ctx, admin, n=30)
    with ctx.session() as s:
        freeze(s, admin, "frames", collection="frames", group_by=r"name:^(vid\d+)_")
    job = _run(ctx, admin, dataset="frames@1", epochs=1, input_size=64, batch_size=8,
               threads=1, train_crop=32, flip_test=False)
    assert {"AP", "AP50", "AP75"} <= set(job.outputs["metrics"])
    assert job.params["flip_test"] is False
    with ctx.session() as s:
        m = s.get(Model, job.outputs["model_id"])
        assert m.task == "detect" and "pr_curves.png" in m.files
        assert m.metrics["per_class"]["fish"].keys() == {"AP", "AP50"}
