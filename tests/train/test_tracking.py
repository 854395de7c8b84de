"""Experiment trackers: a real MLflow tracking server (SQLite store, 127.0.0.1), W&B offline files
read back, resumed runs continuing their tracker runs, ablations as parents with child runs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    TINY_RECIPE,
    InterruptAt,
    assert_clean_error,
    run_command,
    sagan_command,
    sagan_subprocess_env,
    wait_for,
)
from testbed import free_port

from sagan_cli.device import select_device
from sagan_cli.plugins import get_registry
from sagan_cli.recipe import load_recipe
from sagan_cli.results import list_runs, run_dir_for
from sagan_cli.train.run import train_run

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend store, stopped by PID."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL, stderr=log, cwd=folder,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, "the MLflow server answering /health", process)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def tiny(tmp_path: Path, *sets: str):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return load_recipe(path, list(sets), registry=get_registry())


@pytest.mark.slow
def test_a_run_logs_to_an_mlflow_server_and_a_resume_continues_the_same_run(
    mlflow_server, tmp_path
):
    recipe = tiny(
        tmp_path, 'track.backends=["mlflow"]', f'track.mlflow_uri="{mlflow_server}"',
        "track.experiment=resumed",
    )  # fmt: skip
    run = run_dir_for(tmp_path, "tiny", recipe)
    interrupt = InterruptAt(4)
    first = train_run(recipe, run, select_device("cpu"), get_registry(), interrupt)
    assert str(first.status) == "interrupted"
    state = json.loads((run.path / "tracking.json").read_text())
    assert "mlflow" in state["ids"], (state, interrupt.messages)
    run_id = state["ids"]["mlflow"]
    assert state["logged_step"] == 4
    done = train_run(recipe, run, select_device("cpu"), get_registry())
    assert str(done.status) == "done"
    assert json.loads((run.path / "tracking.json").read_text())["ids"]["mlflow"] == run_id
    found = client(mlflow_server)
    tracked = found.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["model.attention_layer"] == "[16]" and params["run_id"] == run.id
    assert params["seed"] == "0" and "sagan_cli_version" in params
    # every step once, in order, though the resume recomputed steps 4..6
    history = found.get_metric_history(run_id, "train/d_loss")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    metrics = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    logged = {m.step: m.value for m in history}
    for record in (m for m in metrics if m["kind"] == "train"):
        assert logged[record["step"]] == pytest.approx(record["d_loss"])
    assert found.get_metric_history(run_id, "structure/structure")
    artifacts = {a.path for a in found.list_artifacts(run_id)}
    assert "samples" in artifacts and "status.json" in artifacts
    assert "attention" in artifacts  # G's attention figure as an image


@pytest.mark.slow
def test_an_ablation_is_a_parent_run_with_its_runs_nested_under_it(mlflow_server, tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)
    command = sagan_command(
        "ablate", str(tmp_path / "tiny.toml"), "--vary", "attention_layer=[],[16]",
        "--name", "nest", "--results", str(tmp_path), "--device", "cpu", "-q",
        "--track", "mlflow", "--set", f"track.mlflow_uri={mlflow_server}",
    )  # fmt: skip
    done = run_command(command, env=sagan_subprocess_env())
    assert done.returncode == 0, done.stderr
    found = client(mlflow_server)
    experiment = found.get_experiment_by_name("nest")
    runs = found.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sagan.ablation") == "nest"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["model.attention_layer"] for c in children} == {"[]", "[16]"}
    assert {c.data.tags["sagan.run_id"] for c in children} == {
        r.id for r in list_runs(tmp_path / "nest")
    }
    assert "summary.csv" in {a.path for a in found.list_artifacts(parent.info.run_id)}
    assert parent.info.run_id != children[0].info.run_id


def test_an_unreachable_tracker_is_one_paragraph_before_any_run_folder(cli, tiny_recipe, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path), "--track", "mlflow",
        "--set", f"track.mlflow_uri={closed}",
    )  # fmt: skip
    assert_clean_error(result, "MLflow at", closed, "cannot be used", "mlflow server")
    assert not (tmp_path / "tiny").exists()
    unknown = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--track", "mlfow")
    assert_clean_error(unknown, "'mlfow' is not a registered tracker plugin", "mlflow")
    typo = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--set", "track.mlflow_url=x")
    assert_clean_error(typo, "track.mlflow_url", "'mlflow' has no parameter 'url'")


def test_a_tracker_failing_mid_run_is_warned_once_and_the_run_goes_on(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAGAN_PLUGINS", "flaky_tracker")
    get_registry.cache_clear()
    result = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--track", "flaky")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("tracker 'flaky' failed") == 1
    assert "the tracking server went away" in result.stderr
    (run,) = list_runs(tmp_path / "tiny")
    assert run.read_status()["status"] == "done" and run.read_metrics()


def read_wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (LevelDB's log format: 32 KiB blocks of chunks
    with a 7-byte header), as wandb's protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, position, pending = [], 7, b""
    block = 32768
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending += chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_files_hold_the_runs_config_history_and_group(tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    (tmp_path / "tiny.toml").write_text(TINY_RECIPE)
    command = sagan_command(
        "ablate", str(tmp_path / "tiny.toml"), "--vary", "attention_layer=[],[16]",
        "--name", "wb", "--results", str(tmp_path), "--device", "cpu", "-q", "--track", "wandb",
    )  # fmt: skip
    env = sagan_subprocess_env(WANDB_SILENT="true")
    done = run_command(command, env=env)
    assert done.returncode == 0, done.stderr
    for run in list_runs(tmp_path / "wb"):
        (file,) = run.path.glob("wandb/offline-run-*/run-*.wandb")
        records = read_wandb_records(file)
        (started,) = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
        assert started.run_group == "wb" and started.display_name.endswith(run.id)
        updates = [started.config] + [
            r.config for r in records if r.WhichOneof("record_type") == "config"
        ]
        config = {item.key: json.loads(item.value_json) for u in updates for item in u.update}
        assert config["run_id"] == run.id and "model.attention_layer" in config
        steps = [
            json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
            if (item.key or "/".join(item.nested_key)) == "_step"
        ]
        assert steps and steps == sorted(steps) and max(steps) == 6
        keys = {
            item.key or "/".join(item.nested_key)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
        }
        assert "train/d_loss" in keys and "structure/structure" in keys


def test_the_track_table_is_no_part_of_a_runs_identity(tmp_path):
    plain = tiny(tmp_path)
    tracked = tiny(tmp_path, 'track.backends=["mlflow"]', "track.wandb_mode=online")
    assert run_dir_for(tmp_path, "t", plain).id == run_dir_for(tmp_path, "t", tracked).id


def test_the_mlflow_check_answers_within_seconds_and_restores_the_environment(monkeypatch):
    from sagan_cli.api import PluginError, TrackContext
    from sagan_cli.trackers.mlflow import MlflowParams, MlflowTracker

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    tracker = MlflowTracker(MlflowParams(uri=closed), TrackContext("x", "/nowhere"))
    with pytest.raises(PluginError, match="cannot be used"):
        tracker.check()  # no retries: it does not sit out MLflow's minutes of backoff
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_missing_tracker_package_or_login_is_said_before_any_run_folder(
    cli, tiny_recipe, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: imports fail
    missing = cli("train", str(tiny_recipe), "--results", str(tmp_path), "--track", "mlflow")
    assert_clean_error(missing, 'pip install "sagan-cli[mlflow]"')
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    online = cli(
        "train", str(tiny_recipe), "--results", str(tmp_path), "--track", "wandb",
        "--set", "track.wandb_mode=online",
    )  # fmt: skip
    assert_clean_error(online, "W&B online mode needs a login", "wandb login", "wandb_mode=offline")
    assert not (tmp_path / "tiny").exists()


def test_the_contract_check_takes_a_tracker_through_a_runs_life(cli, monkeypatch):
    good = cli("plugins", "check", "tensorboard", "mlflow")
    assert good.exit_code == 0, good.output
    assert "2 checks: 2 ok" in good.stdout
    monkeypatch.setenv("SAGAN_PLUGINS", "flaky_tracker")
    get_registry.cache_clear()
    flaky = cli("plugins", "check", "flaky")
    assert_clean_error(flaky, "flaky", "ConnectionError", "the tracking server went away")
