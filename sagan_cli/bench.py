"""Benchmarks a user would compare, written to ``results/bench/`` as CSV and Markdown.

``train``: images/s of the full training iteration of a recipe (D and G updates
and EMA, at its batch size, precision and optional ``torch.compile``) on
synthetic data, so that the paper configurations can be timed anywhere.
``fid``: seconds for reference features (cold), sample generation and the
generated features plus FID (with the reference cached).

``attention``: forward + backward time and memory of every attention variant at
square feature maps, the fused training path against the explicit-equation
baseline. Memory is reported two ways: the bytes autograd keeps for backward
(``saved_mb``, exact on any device; it holds the N x M map on the explicit path)
and, on CUDA, the allocator's peak during forward + backward (``peak_mb``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from sagan_cli import markdown
from sagan_cli.datasets.base import DataSource, TensorImageSet
from sagan_cli.device import autocast, synchronize
from sagan_cli.evaluate.weights import InceptionWeights
from sagan_cli.fileio import atomic_write_text, fresh_path
from sagan_cli.model.attention import SelfAttention2d
from sagan_cli.plugins import Registry
from sagan_cli.recipe import Recipe

EXPLICIT = " (explicit)"
MB = 2**20


@dataclass
class AttentionResult:
    variant: str
    size: int
    positions: int
    channels: int
    batch: int
    ms: float | None
    saved_mb: float | None
    peak_mb: float | None
    status: str


def _saved_bytes(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, sum(storages.values())


def _explicit_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations written out (the quadratic baseline)."""
    assert isinstance(module, SelfAttention2d)
    return module.forward_explicit(x)[0]


def _explicit_bytes(channels: int, size: int, batch: int, variant: str) -> int:
    positions = size * size
    attended = positions // 4 if variant == "sagan_pooled" else positions
    return 3 * batch * positions * attended * 4  # scores, softmax and its gradient, fp32


def _time_one(
    module: nn.Module,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    repeats: int,
) -> tuple[float, int, int | None]:
    def step() -> torch.Tensor:
        with autocast(device, precision):
            out = forward(module, x)
        return out

    for _ in range(2):  # warm-up: kernel selection, allocator
        step().float().square().mean().backward()
    synchronize(device)
    out, saved = _saved_bytes(step)
    out.float().square().mean().backward()
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step().float().square().mean().backward()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    times = []
    for _ in range(repeats):
        x.grad = None
        synchronize(device)
        start = time.perf_counter()
        step().float().square().mean().backward()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000, saved, peak


def bench_attention(
    registry: Registry,
    device: torch.device,
    precision: str,
    sizes: Sequence[int],
    channels: int,
    batch: int,
    repeats: int,
    memory_budget: int,
    on_result: Callable[[AttentionResult], None] = lambda r: None,
) -> pd.DataFrame:
    """Time every registered attention variant plus the explicit baselines at each size."""
    from sagan_cli.builtins.norms import SpectralParams, build_spectral

    weight_norm = build_spectral(SpectralParams())  # as in training: SN on every 1x1 conv
    plans: list[tuple[str, str, Callable[[nn.Module, torch.Tensor], torch.Tensor]]] = []
    for name in registry.names("attention"):
        if name == "none":
            continue
        plans.append((name, name, lambda m, x: m(x)))
        if name in ("sagan", "sagan_pooled"):
            plans.append((name + EXPLICIT, name, _explicit_forward))
    results = []
    for label, plugin_name, forward in plans:
        entry = registry.get("attention", plugin_name, key="variant")
        for size in sizes:
            row = AttentionResult(label, size, size * size, channels, batch, None, None, None, "ok")
            if (
                label.endswith(EXPLICIT)
                and _explicit_bytes(channels, size, batch, plugin_name) > memory_budget
            ):
                row.status = "skipped: N x M map over the memory budget"
            else:
                torch.manual_seed(0)
                params = entry.plugin.params()
                module = entry.plugin.factory(channels, params, weight_norm).to(device)
                with torch.no_grad():
                    for pname, param in module.named_parameters():
                        if pname.endswith("gamma"):
                            param.fill_(1.0)  # so that backward runs through the attention
                x = torch.randn(batch, channels, size, size, device=device)
                if device.type == "cuda":
                    module = module.to(memory_format=torch.channels_last)
                    x = x.to(memory_format=torch.channels_last)
                x.requires_grad_(True)
                try:
                    ms, saved, peak = _time_one(module, forward, x, device, precision, repeats)
                    row.ms, row.saved_mb = ms, saved / MB
                    row.peak_mb = None if peak is None else peak / MB
                except torch.OutOfMemoryError:
                    row.status = "out of memory"
                finally:
                    del module, x
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            results.append(row)
            on_result(row)
    return pd.DataFrame([asdict(r) for r in results])


def attention_markdown(frame: pd.DataFrame, device: str, precision: str) -> str:
    """Time and memory tables by size (rows) and variant (columns), plus fused/explicit ratios."""
    lines = [f"# Attention forward + backward ({device}, {precision})", ""]
    first = frame.iloc[0]
    lines.append(f"batch {first.batch}, {first.channels} channels, spectral norm on the 1x1 convs.")
    lines.append("")
    for column, title, fmt in (
        ("ms", "Time per forward + backward (ms, median)", "{:.2f}"),
        ("saved_mb", "Memory kept for backward (MiB)", "{:.1f}"),
        ("peak_mb", "Peak allocated during forward + backward (MiB, CUDA)", "{:.1f}"),
    ):
        if frame[column].isna().all():
            continue
        table = frame.pivot(index="size", columns="variant", values=column)
        lines.append(f"## {title}")
        lines.append("")
        lines.append(_markdown_table(table, fmt))
        lines.append("")
    ratios = []
    for variant in ("sagan", "sagan_pooled"):
        fused = frame[frame.variant == variant].set_index("size")
        explicit = frame[frame.variant == variant + EXPLICIT].set_index("size")
        if fused.empty or explicit.empty:
            continue
        ratios.append(
            pd.DataFrame(
                {
                    f"{variant} speed-up": explicit.ms / fused.ms,
                    f"{variant} memory saving": explicit.saved_mb / fused.saved_mb,
                }
            )
        )
    if ratios:
        lines.append("## Explicit / fused (higher favours the fused SDPA path)")
        lines.append("")
        lines.append(_markdown_table(pd.concat(ratios, axis=1), "{:.2f}x"))
        lines.append("")
    return "\n".join(lines)


def _markdown_table(frame: pd.DataFrame, fmt: str) -> str:
    rows = [
        [str(index), *("–" if pd.isna(v) else fmt.format(v) for v in row)]
        for index, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return markdown.table(["size", *map(str, frame.columns)], rows, numeric=True)


def write_results(
    out_dir: Path, kind: str, device: str, precision: str, frame: pd.DataFrame, text: str
) -> tuple[Path, Path]:
    """``<kind>-<device>-<precision>-<time>.csv`` and ``.md``, never replacing older files."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    csv_path = fresh_path(out_dir / f"{kind}-{device}-{precision}-{stamp}.csv")
    md_path = csv_path.with_suffix(".md")
    atomic_write_text(csv_path, frame.to_csv(index=False))
    atomic_write_text(md_path, text)
    return csv_path, md_path


# ---- training step ------------------------------------------------------------------------------


class SyntheticSource(DataSource):
    """Random uint8 images with the recipe's shape: the training step without any data set."""

    def __init__(self, resolution: int, num_classes: int, count: int) -> None:
        super().__init__("synthetic", None, resolution)
        self._classes = num_classes
        self._count = count

    @property
    def num_classes(self) -> int:
        return self._classes

    def split(self, name: str) -> TensorImageSet:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(
            0,
            256,
            (self._count, 3, self.resolution, self.resolution),
            dtype=torch.uint8,
            generator=generator,
        )
        labels = torch.randint(max(self._classes, 1), (self._count,), generator=generator)
        return TensorImageSet(images, labels if self._classes else None)

    def identity(self) -> dict[str, object]:
        return {"source": "synthetic", "resolution": self.resolution}


@dataclass
class TrainStepResult:
    recipe: str
    device: str
    precision: str
    compile: bool
    batch: int
    g_params: int
    d_params: int
    steps: int
    ms_per_step: float
    it_per_s: float
    img_per_s: float
    peak_mb: float | None


def bench_train_step(
    recipe: Recipe,
    registry: Registry,
    device: torch.device,
    compiled: bool,
    num_classes: int | None,
    steps: int,
    warmup: int,
) -> TrainStepResult:
    """Time ``steps`` full iterations (D update(s), G update, EMA) after ``warmup`` untimed ones."""
    from sagan_cli.components import build_data_source, count_parameters
    from sagan_cli.errors import SaganError
    from sagan_cli.results import RunDir
    from sagan_cli.train.data import BatchStream
    from sagan_cli.train.loop import Observer, TrainingSession

    recipe = recipe.model_copy(
        update={"train": recipe.train.model_copy(update={"compile": compiled})}
    )
    classes = 0
    if recipe.model.conditional:
        try:
            classes = num_classes or build_data_source(recipe, registry).num_classes
        except SaganError:  # the data set is not on this machine: ImageNet-sized default
            classes = 1000
    source = SyntheticSource(recipe.data.resolution, classes, recipe.train.batch_size * 4)
    session = TrainingSession(recipe, RunDir(Path("unused")), device, registry, Observer(), source)
    session.data = BatchStream(
        source.split("train"),
        recipe.train.batch_size,
        0,
        device,
        recipe.data.hflip,
        resident_limit=2**62,
    )
    for _ in range(warmup):
        session.train_step()
        session.step += 1
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        session.train_step()
        session.step += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None
    return TrainStepResult(
        recipe.name,
        device.type,
        session.precision,
        compiled,
        recipe.train.batch_size,
        count_parameters(session.generator),
        count_parameters(session.discriminator),
        steps,
        1000 * seconds / steps,
        steps / seconds,
        steps * recipe.train.batch_size / seconds,
        peak,
    )


def rows_markdown(title: str, rows: list[dict[str, object]]) -> str:
    """A plain Markdown table of result rows (keys as columns)."""
    columns = list(rows[0])
    body = markdown.table(columns, [[_fmt(row[c]) for c in columns] for row in rows])
    return f"# {title}\n\n{body}\n"


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ---- FID ------------------------------------------------------------------------------------------


def bench_fid(
    recipe: Recipe,
    registry: Registry,
    device: torch.device,
    weights: InceptionWeights,
    num_samples: int,
    reference_samples: int,
    batch_size: int,
    cache_root: Path,
) -> dict[str, object]:
    """Where FID time goes: reference features (cold), then generation and scoring (warm cache)."""
    from sagan_cli.components import build_data_source, build_networks, num_classes_for
    from sagan_cli.device import effective_precision
    from sagan_cli.evaluate.service import Evaluation, RunEvaluator, reference_from
    from sagan_cli.model.sampling import sample_images

    source = build_data_source(recipe, registry)
    source.check()
    torch.manual_seed(0)
    generator, _ = build_networks(recipe, num_classes_for(recipe, source), registry)
    generator.to(device)
    precision = effective_precision(device, recipe.train.precision)
    reference = reference_from(source, recipe.eval.reference, reference_samples)
    evaluation = Evaluation(weights, reference, device, batch_size, cache_root)
    start = time.perf_counter()
    warm_up = sample_images(generator, min(num_samples, 64), 0, device, precision, batch_size)
    evaluation.score(warm_up, ["fid"])  # computes and caches the reference features
    cold = time.perf_counter() - start
    record = RunEvaluator(evaluation, 0, precision).evaluate(generator, 0, ["fid"], num_samples)
    return {
        "recipe": recipe.name,
        "device": device.type,
        "precision": precision,
        "resolution": recipe.data.resolution,
        "num_samples": num_samples,
        "reference_samples": reference.description["size"],
        "reference_cold_s": round(cold, 2),  # reference features plus a 64-sample FID
        "generate_s": record["seconds_generate"],
        "features_and_fid_s": record["seconds_metrics"],
        "total_warm_s": round(record["seconds_generate"] + record["seconds_metrics"], 2),
        "fid": round(float(record["fid"]), 4),
        "weights_sha256": weights.sha256[:12],
    }
