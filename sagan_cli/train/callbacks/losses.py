"""The loss log: a ``train`` record every ``train.log_every`` steps, and the divergence bound."""

from __future__ import annotations

from sagan_cli.train.callbacks import Callback, Loop, every
from sagan_cli.train.session import Diverged

DIVERGED_LOGS = 3  # consecutive log lines beyond train.max_loss that count as diverged


class LossLog(Callback):
    """Mean D and G losses since the last line (over ranks: every rank logs and judges the
    same numbers), learning rates, images/s, attention gammas. A run whose mean losses stay
    beyond ``max_loss`` for ``DIVERGED_LOGS`` lines in a row has diverged; non-finite
    losses have diverged at once."""

    syncs = True  # images/s needs the device's work of the interval finished

    def __init__(self, log_every: int, max_loss: float) -> None:
        self.log_every, self.max_loss = log_every, max_loss

    def due(self, step: int, last: bool) -> bool:
        return every(self.log_every, step, last)

    def on_step(self, loop: Loop) -> None:
        session = loop.session
        losses = session.pending_losses()
        if losses is None:
            return
        pending = session.pending
        means = losses.mean(dim=0)
        beyond = bool(self.max_loss) and float(means.abs().max()) > self.max_loss
        session.logs_over_bound = session.logs_over_bound + 1 if beyond else 0
        loop.record(
            {
                "kind": "train",
                "step": session.step,
                "d_loss": float(losses[:, 0].mean()),
                "g_loss": float(losses[:, 1].mean()),
                "lr_g": session.opt_g.param_groups[0]["lr"],
                "lr_d": session.opt_d.param_groups[0]["lr"],
                "img_per_s": len(pending.losses)
                * session.recipe.train.batch_size
                / max(pending.train_seconds, 1e-9),
                "wall_time": session.wall_time,
                **session.gammas(),
            }
        )
        pending.clear(session.step + 1)
        if session.logs_over_bound >= DIVERGED_LOGS:
            raise Diverged(
                session.step,
                f"the mean losses (D {float(means[0]):.3g}, G {float(means[1]):.3g}) stayed beyond "
                f"train.max_loss = {self.max_loss:g} for {DIVERGED_LOGS} log lines in a row",
            )
