"""Where attention looks through training: per layer of G (EMA, the sample latents) and D (the
data's first images), on a fixed batch through the explicit maps, in eval mode."""

from __future__ import annotations

import torch
from PIL import Image

from sagan_cli.fileio import atomic_write
from sagan_cli.inspect.maps import (
    Layer,
    attention_layers,
    auto_queries,
    captured_inputs,
    layer_statistics,
    maps_of,
    query_maps,
)
from sagan_cli.model.sampling import fixed_inputs, to_uint8
from sagan_cli.train.callbacks import Callback, Loop, every
from sagan_cli.train.callbacks.samples import SAMPLE_SEED_OFFSET


class AttentionStatistics(Callback):
    """An ``attention`` record (distance, entropy, partner share per layer, gammas) every
    ``every`` steps and at step 0, from ``images`` images; with ``figure``, also G's attention
    figure as a picture (for TensorBoard and trackers)."""

    needs_finite = True
    main_only = True

    def __init__(self, every_steps: int, images: int, figure: bool) -> None:
        self.every_steps, self.images, self.figure = every_steps, images, figure

    def due(self, step: int, last: bool) -> bool:
        return every(self.every_steps, step, last)

    def on_start(self, loop: Loop) -> None:
        if loop.session.step == 0:
            self.on_step(loop)

    def on_step(self, loop: Loop) -> None:
        session = loop.session
        layers = {
            "g": attention_layers(session.ema.model, "g"),
            "d": attention_layers(session.discriminator, "d"),
        }
        if not any(layer.has_maps for found in layers.values() for layer in found):
            return
        assert session.data is not None
        z, labels = fixed_inputs(
            self.images,
            session.recipe.model.z_dim,
            session.num_classes,
            session.recipe.seed + SAMPLE_SEED_OFFSET,
        )
        labels = None if labels is None else labels.to(session.device)
        real, real_labels = session.data.first(self.images)
        was_training = session.discriminator.training
        session.discriminator.eval()
        try:
            with torch.no_grad(), captured_inputs(layers["g"] + layers["d"]) as inputs:
                fake = session.ema.model(z.to(session.device), labels)
                session.discriminator(real, real_labels if session.num_classes else None)
        finally:
            session.discriminator.train(was_training)
        record = {"kind": "attention", "step": session.step, **session.gammas()}
        record.update(layer_statistics(layers["g"] + layers["d"], inputs, session.partners))
        loop.record(record)
        if self.figure:
            self._figure(loop, to_uint8(fake[:4]).cpu(), layers["g"], inputs)

    def _figure(
        self, loop: Loop, images: torch.Tensor, layers: list[Layer], inputs: dict[str, torch.Tensor]
    ) -> None:
        # matplotlib (about 0.5 s to import) only for runs that draw the figure
        from sagan_cli.inspect.figure import LayerMaps, figure_array, render

        points = auto_queries(images, 3)
        found = [
            LayerMaps(
                layer.name,
                layer.size,
                query_maps(
                    layer, maps_of(layer, inputs[layer.name][:4]).cpu(), points, images.shape[-1]
                ),
            )
            for layer in layers
            if layer.has_maps
        ]
        if found:
            step = loop.session.step
            figure = render(images, points, found, f"G attention at step {step}")
            picture = figure_array(figure)
            loop.image("attention/g", step, picture)
            # the newest beside the run's samples (sagan report --format html shows it)
            atomic_write(
                loop.run.attention_figure,
                lambda handle: Image.fromarray(picture.transpose(1, 2, 0)).save(handle, "PNG"),
            )
