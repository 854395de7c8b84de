"""In-training evaluation: FID every ``eval.every`` steps (best.pt keeps the lowest), and after a
finished run every metric of ``eval.metrics`` for the last step and for best.pt."""

from __future__ import annotations

import copy
from typing import Any, Protocol

from sagan_cli import checkpoint as ckpt
from sagan_cli.model.networks import Generator
from sagan_cli.outcomes import RunStatus
from sagan_cli.train.callbacks import Callback, Loop
from sagan_cli.train.result import TrainResult


class Evaluator(Protocol):
    """Computes metrics of a generator (``sagan_cli.evaluate.service.RunEvaluator``)."""

    def evaluate(
        self,
        generator: Generator,
        step: int,
        metrics: list[str],
        num_samples: int,
        final: bool,
        checkpoint: str,
    ) -> dict[str, Any]: ...


class Evaluation(Callback):
    needs_finite = True
    main_only = True

    def __init__(
        self,
        evaluator: Evaluator | None,  # None on ranks other than rank 0 (it never runs there)
        every: int,
        final: bool,
        metrics: list[str],
        num_samples: int,
    ) -> None:
        self.evaluator, self.every, self.final = evaluator, every, final
        self.metrics, self.num_samples = metrics, num_samples

    def due(self, step: int, last: bool) -> bool:
        return bool(self.every) and step % self.every == 0

    def on_step(self, loop: Loop) -> None:
        session = loop.session
        assert self.evaluator is not None
        record = self.evaluator.evaluate(
            session.ema.model, session.step, ["fid"], self.num_samples, False, "training"
        )
        loop.record(record)
        self._keep_best(loop, record)

    def on_end(self, loop: Loop, result: TrainResult) -> None:
        if result.status != RunStatus.DONE or not self.final:
            return
        session = loop.session
        assert self.evaluator is not None
        record = self.evaluator.evaluate(
            session.ema.model, session.step, self.metrics, self.num_samples, True, "training"
        )
        loop.record(record, evaluation=True)
        self._keep_best(loop, record)
        self._evaluate_best(loop, record)

    def _keep_best(self, loop: Loop, record: dict[str, Any]) -> None:
        session, run = loop.session, loop.run
        assert run is not None
        fid = record.get("fid")
        if fid is not None and (session.best_fid is None or fid < session.best_fid):
            session.best_fid = fid
            state = {**session.state(run.id), "fid": fid}
            ckpt.write_checkpoint(state, run.checkpoints / "best.pt")

    def _evaluate_best(self, loop: Loop, final: dict[str, Any]) -> None:
        """Full metrics of best.pt (lowest in-training FID), recorded beside the final ones."""
        session, run = loop.session, loop.run
        assert run is not None
        best = run.checkpoints / "best.pt"
        if not best.is_file():
            return
        state = ckpt.load_checkpoint(best, session.device, run.id, run.path)
        if int(state["step"]) == session.step:
            # best.pt holds the weights the final evaluation just scored, and the samples come
            # from the same seed: the same numbers, so they are not computed a second time
            loop.record({**final, "final": False, "checkpoint": "best.pt"}, evaluation=True)
            return
        generator = copy.deepcopy(session.ema.model)
        ckpt.load_generator_weights(generator, state, best, run.recipe_path)
        assert self.evaluator is not None
        record = self.evaluator.evaluate(
            generator, int(state["step"]), self.metrics, self.num_samples, False, "best.pt"
        )
        loop.record(record, evaluation=True)
