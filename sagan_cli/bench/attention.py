"""``sagan bench attention``: forward + backward time and memory of every attention variant at
square feature maps, the fused training path against the explicit-equation baseline.

Memory is reported two ways: the bytes autograd keeps for backward (``saved_mb``,
exact on any device; it holds the N x M map on the explicit path) and, on CUDA,
the allocator's peak during forward + backward (``peak_mb``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial

import pandas as pd
import torch
from torch import nn

from sagan_cli.api import LayerContext
from sagan_cli.bench.output import frame_markdown
from sagan_cli.datasets.shapes import mirror_partners
from sagan_cli.device import autocast, synchronize
from sagan_cli.model.attention import SelfAttention2d
from sagan_cli.plugins import Registry

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


Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _time_interleaved(
    module: nn.Module,
    forwards: list[Forward],
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    repeats: int,
) -> list[tuple[float, int, int | None]]:
    """(median ms, bytes saved for backward, CUDA peak) of each forward of one module.

    The forwards take turns in every repetition, so a machine that speeds up or slows
    down (shared CPUs do) shifts them all alike and their ratio stays honest.
    """

    def step(forward: Forward) -> torch.Tensor:
        with autocast(device, precision):
            return forward(module, x)

    memory = []
    for forward in forwards:
        for _ in range(2):  # warm-up: kernel selection, allocator
            step(forward).float().square().mean().backward()
        synchronize(device)
        out, saved = _saved_bytes(partial(step, forward))
        out.float().square().mean().backward()
        peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(forward).float().square().mean().backward()
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
        memory.append((saved, peak))
    times: list[list[float]] = [[] for _ in forwards]
    for _ in range(repeats):
        for index, forward in enumerate(forwards):
            x.grad = None
            synchronize(device)
            start = time.perf_counter()
            step(forward).float().square().mean().backward()
            synchronize(device)
            times[index].append(time.perf_counter() - start)
    return [
        (statistics.median(t) * 1000, saved, peak)
        for t, (saved, peak) in zip(times, memory, strict=True)
    ]


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
    """Time every registered attention variant (and the explicit equations of sagan and
    sagan_pooled, interleaved with their fused path) at each size."""
    from torch.nn.utils.parametrizations import spectral_norm

    weight_norm = spectral_norm  # as in training: SN on every 1x1 conv
    results = []
    for name in (n for n in registry.names("attention") if n != "none"):
        entry = registry.get("attention", name, key="variant")
        for size in sizes:
            fused = AttentionResult(
                name, size, size * size, channels, batch, None, None, None, "ok"
            )
            rows = [fused]
            timed: list[tuple[AttentionResult, Forward]] = [(fused, lambda m, x: m(x))]
            if name in ("sagan", "sagan_pooled"):
                explicit = replace(fused, variant=name + EXPLICIT)
                rows.append(explicit)
                if _explicit_bytes(channels, size, batch, name) > memory_budget:
                    explicit.status = "skipped: N x M map over the memory budget"
                else:
                    timed.append((explicit, _explicit_forward))
            torch.manual_seed(0)
            # blocks that need a declared dependency (the oracle) get the mirror image, shapes'
            context = LayerContext("g", size, 0, channels, size, weight_norm, mirror_partners(size))
            module = entry.plugin.factory(entry.plugin.params(), context).to(device)
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
                forwards = [forward for _, forward in timed]
                measured = _time_interleaved(module, forwards, x, device, precision, repeats)
                for (row, _), (ms, saved, peak) in zip(timed, measured, strict=True):
                    row.ms, row.saved_mb = ms, saved / MB
                    row.peak_mb = None if peak is None else peak / MB
            except torch.OutOfMemoryError:
                for row, _ in timed:  # a row skipped for its size keeps saying so
                    row.status = "out of memory"
            finally:
                del module, x
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            for row in rows:
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
        lines.append(frame_markdown(table, fmt))
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
        lines.append(frame_markdown(pd.concat(ratios, axis=1), "{:.2f}x"))
        lines.append("")
    return "\n".join(lines)
