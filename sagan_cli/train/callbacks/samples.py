"""Sample grids of the EMA generator from a fixed z, and the data's structural score of them."""

from __future__ import annotations

from sagan_cli.imagefiles import save_grid
from sagan_cli.model.sampling import sample_images, to_uint8
from sagan_cli.train.callbacks import Callback, Loop, every

SAMPLE_SEED_OFFSET = 1_000_003  # fixed z for grids and scores: a function of the run seed only
GRID_SIZE = 64


class SampleGrids(Callback):
    """``samples/step-XXXXXXXX.png`` every ``every`` steps and at step 0 (the untrained
    generator: every run's baseline), ``samples/real.png`` once (what samples should look
    like), and a ``structure`` record when the data has a structural score."""

    needs_finite = True
    main_only = True

    def __init__(self, every_steps: int, structure_samples: int) -> None:
        self.every_steps, self.structure_samples = every_steps, structure_samples

    def due(self, step: int, last: bool) -> bool:
        return every(self.every_steps, step, last)

    def on_start(self, loop: Loop) -> None:
        if loop.session.step == 0:
            self.on_step(loop)

    def on_step(self, loop: Loop) -> None:
        session, run = loop.session, loop.run
        assert run is not None
        seed = session.recipe.seed + SAMPLE_SEED_OFFSET
        count = max(GRID_SIZE, self.structure_samples)
        images = sample_images(session.ema.model, count, seed, session.device, session.precision)
        grid = save_grid(images[:GRID_SIZE], run.samples / f"step-{session.step:08d}.png")
        loop.image("samples", session.step, grid)
        if not run.real_grid.exists() and session.data is not None:
            save_grid(to_uint8(session.data.first(GRID_SIZE)[0]).cpu(), run.real_grid)
        scores = session.source.structural_score(images[: self.structure_samples])
        if scores is not None:
            loop.record({"kind": "structure", "step": session.step, **scores})
