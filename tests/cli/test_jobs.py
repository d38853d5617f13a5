"""``aqualens predict --collection``, ``jobs list|show|logs|wait|cancel|retry``, ``compare``."""

from __future__ import annotations

import json

from aqualens.cli.main import app
from aqualens.processing import jobs
from tests.processing.helpers import add_images, admin_id, register_brightness_model


def test_predict_collection_and_compare(ctx, runner, tmp_path):
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
    r = runner.invoke(app, ["predict", "--model", "bright@1.0.0", "--collection", "cam1",
                            "--chunk-size", "0"], env=env)
    assert r.exit_code == 1 and "chunk_size must be an integer 1..100000" in r.output, r.output
    r = runner.invoke(app, ["predict", "--model", "bright@1.0.0", "--collection", "cam1",
                            "--batch-size", "1", "--chunk-size", "1"], env=env)
    assert r.exit_code == 0 and "succeeded: 3 done" in r.output, r.output


def test_cancel_retry_and_errors(ctx, runner):
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


def test_services_cli(ctx, runner, tmp_path):
    from tests.processing.helpers import png_bytes

    register_brightness_model(ctx, tmp_path)
    env = {"AQUALENS_DATA_DIR": str(ctx.settings.data_dir)}
    spec = tmp_path / "svc.yaml"
    spec.write_text("name: cli-svc\ntriggers: [{type: collection, collection: cam1}]\n"
                    "steps: [{model: bright}]\n")
    r = runner.invoke(app, ["services", "apply", str(spec)], env=env)
    assert r.exit_code == 0 and "created" in r.output, r.output
    token = r.output.strip().splitlines()[-1]
    assert token.startswith("aqlt_")
    r = runner.invoke(app, ["services", "apply", str(spec)], env=env)
    assert "trigger token unchanged" in r.output
    img = tmp_path / "a.png"
    img.write_bytes(png_bytes(240))
    r = runner.invoke(app, ["services", "run", "cli-svc", str(img)], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["results"][0]["steps"][0]["result"]["top"][0]["label"] == "bright"
    for cmd, words in ((["pause", "cli-svc"], "paused"), (["resume", "cli-svc"], "resumed"),
                       (["list"], "cli-svc"), (["events", "cli-svc"], "events of cli-svc"),
                       (["show", "cli-svc"], '"paused": false')):
        r = runner.invoke(app, ["services", *cmd], env=env)
        assert r.exit_code == 0 and words in r.output, (cmd, r.output)
    r = runner.invoke(app, ["services", "token", "cli-svc", "--rotate"], env=env)
    assert r.output.strip() != token
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps: [{model: nope}]\n")
    r = runner.invoke(app, ["services", "apply", str(bad)], env=env)
    assert r.exit_code == 1 and "steps.0.model" in r.output
    r = runner.invoke(app, ["services", "delete", "cli-svc"], env=env)
    assert r.exit_code == 0
    r = runner.invoke(app, ["services", "show", "cli-svc"], env=env)
    assert r.exit_code == 1 and "no service 'cli-svc'" in r.output
