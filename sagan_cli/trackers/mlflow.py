"""MLflow (extra ``mlflow``): a run per run folder, nested under its ablation's parent run.

The default store is a SQLite file in the results folder, ``<results>/mlflow.db``, with
artifacts in ``<results>/mlartifacts`` (``mlflow ui --backend-store-uri
sqlite:///results/mlflow.db`` shows it; MLflow 3 retired its plain-file store);
``[track] mlflow_uri`` points at a tracking server instead. The
check asks the server once with MLflow's retries off, so an unreachable one is said within
seconds, not after minutes of backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from sagan_cli.api import PluginError, PluginParams, TrackContext, TrackedRun, Tracker
from sagan_cli.errors import describe_exception
from sagan_cli.extras import optional

STATUS = {"done": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED
PARAM_LIMIT = 6000  # MLflow's longest parameter value


class MlflowParams(PluginParams):
    uri: str | None = Field(
        None,
        description="tracking URI (http://host:port, sqlite:///path); default <results>/mlflow.db",
    )


@contextlib.contextmanager
def _no_retries() -> Iterator[None]:
    """MLflow's HTTP client without its minutes of retries (the check wants an answer)."""
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MlflowTracker(Tracker):
    def __init__(self, params: MlflowParams, context: TrackContext) -> None:
        results = Path(context.results).resolve()
        self.uri = params.uri or f"sqlite:///{results / 'mlflow.db'}"
        # a local store keeps its artifacts beside it (a server decides for itself)
        self.artifacts = None if params.uri else (results / "mlartifacts").as_uri()
        self.experiment = context.experiment
        self.run_id: str | None = None
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            optional("mlflow", "mlflow", "mlflow", "[track] backends = mlflow (--track mlflow)")
            from mlflow.tracking import MlflowClient

            # its database set-up talks at INFO on stderr, between the run's own lines
            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(client.create_experiment(self.experiment, artifact_location=self.artifacts))

    def check(self) -> None:
        try:
            with _no_retries():
                self.experiment_id()
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"MLflow at {self.uri} cannot be used ({describe_exception(exc)}). Start the "
                f"server (mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                f"sqlite:///mlflow.db) or fix [track] mlflow_uri (--set track.mlflow_uri=URI)"
            ) from None

    def start(self, run: TrackedRun) -> str:
        client = self.client()
        if run.resume_id is not None:
            with contextlib.suppress(Exception):
                client.get_run(run.resume_id)
                client.update_run(run.resume_id, status="RUNNING")
                self.run_id = run.resume_id
                return run.resume_id
        tags = {"sagan.run_id": run.run_id}
        if run.parent_id is not None:
            tags["mlflow.parentRunId"] = run.parent_id
        created = client.create_run(self.experiment_id(), run_name=run.name, tags=tags)
        self.run_id = created.info.run_id
        self._params(run.params)
        return str(self.run_id)

    def _params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:PARAM_LIMIT]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client().log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        self.client().log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items()],
            tags=[RunTag(f"sagan.{k}", v) for k, v in tags.items()],
        )

    def log_image(self, tag: str, step: int, image: Any) -> None:
        self.client().log_image(
            self.run_id, image.transpose(1, 2, 0), artifact_file=f"{tag}/step-{step:08d}.png"
        )

    def log_file(self, path: str) -> None:
        self.client().log_artifact(self.run_id, path)

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            self.client().set_terminated(self.run_id, STATUS.get(status, "FAILED"))

    def start_group(self, name: str, folder: str, params: dict[str, Any]) -> str | None:
        client = self.client()
        created = client.create_run(
            self.experiment_id(), run_name=name, tags={"sagan.ablation": name}
        )
        self.run_id = created.info.run_id
        self._params(params)
        return str(self.run_id)

    def finish_group(self, parent_id: str | None, files: list[str]) -> None:
        if parent_id is None:
            return
        client = self.client()
        for path in files:
            client.log_artifact(parent_id, path)
        client.set_terminated(parent_id, "FINISHED")
