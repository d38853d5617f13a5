"""``aqualens predict --collection``, ``jobs list|show|logs|wait|cancel|retry``, ``compare``."""

from __future__ import annotations

import json

from aqualens.cli.main import app
from aqualens.processing import jobs
from tests.processing.helpers import add_images, admin_id, register_brightness_model


def test_predict_collection_and_compare(ctx, runner, tmp_path):  # noqa: ANN001
    add_images(ctx, [10, 100, 200])
    register_brightness_model(ctx, tmp_path, "1.0.0")
    register_brightness_model(ctx, tmp_path, "2.0.0", threshold_shift=-0.15)
    env = {"AQUALENS_DATA_DIR": str(ctx.settings.data_dir)}
    r = runner.invoke(app, ["predict", "--model", "bright@1.0.0", "--collection", "cam1"], env=env)
    assert r.exit_code == 0, r.output
    assert "succeeded: 3 done, 0 failed of 3" in r.output
    r = runner.invoke(app, ["predict", "--model", "bright@2.0.0", "--query", "collection=cam1",
                            "--detach"], env=env)
    assert r.exit_code == 0, r.output
    second = r.output.strip().splitlines()[-1]
    r = runner.invoke(app, ["jobs", "wait", second, "--run"], env=env)
    assert r.exit_code == 0 and "succeeded" in r.output, r.output
    r = runner.invoke(app, ["jobs", "list", "--format", "json"], env=env)
    listed = json.loads(r.output)
    assert len(listed) == 2 and {j["state"] for j in listed} == {"succeeded"}
    first = next(j["id"] for j in listed if j["id"] != second)
    r = runner.invoke(app, ["jobs", "show", first], env=env)
    assert json.loads(r.output)["params"]["model"] == "bright@1.0.0"
    r = runner.invoke(app, ["jobs", "logs", first], env=env)
    assert "claimed by runner" in r.output and "succeeded" in r.output
    plot = tmp_path / "cmp.png"
    r = runner.invoke(app, ["compare", "--job", first, "--job", second, "--plot", str(plot)],
                      env=env)
    assert r.exit_code == 0, r.output
    assert "agreement: 66.7% on 3 images; 1 changed" in r.output
    assert "dark → bright: 1 images" in r.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    r = runner.invoke(app, ["compare", "--job", first], env=env)
    assert r.exit_code != 0 and "exactly twice" in r.output


def test_cancel_retry_and_errors(ctx, runner):  # noqa: ANN001
    add_images(ctx, [5, 6])
    env = {"AQUALENS_DATA_DIR": str(ctx.settings.data_dir)}
    with ctx.session() as s:
        job_id = jobs.create_job(s, "image-stats", {"collection": "cam1"}, admin_id(ctx)).id
    r = runner.invoke(app, ["jobs", "cancel", job_id], env=env)
    assert r.exit_code == 0 and "cancelled" in r.output
    r = runner.invoke(app, ["jobs", "cancel", job_id], env=env)
    assert r.exit_code == 1 and "already cancelled" in r.output
    r = runner.invoke(app, ["jobs", "retry", job_id], env=env)
    assert r.exit_code == 0 and "succeeded: 2 done" in r.output, r.output
    r = runner.invoke(app, ["jobs", "show", "nope"], env=env)
    assert r.exit_code == 1 and "no job 'nope'" in r.output
    r = runner.invoke(app, ["predict", "--model", "x", "--collection", "cam1"], env=env)
    assert r.exit_code == 1 and "no model 'x'" in r.output
    r = runner.invoke(app, ["predict", "--model", "x", "--query", "nokey"], env=env)
    assert r.exit_code == 1 and "not key=value" in r.output
