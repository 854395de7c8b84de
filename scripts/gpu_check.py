"""The GPU check's measurements, one step per call (``scripts/gpu_check.sh`` runs them in order,
each under its own time limit, and ``report`` last).

Every step appends to one CSV in the output folder (``ceilings``, ``pytest``,
``correctness``, ``bench_train``, ``bench_attention``, ``training``); ``report``
writes ``report.md`` from them, ending with the targets table. ``--quick`` shrinks
every size so that the whole check runs on a CPU in well under a minute (the
rehearsal the test suite runs); the numbers it then produces check the script, not
the hardware.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
CSV_NAMES = ("ceilings", "pytest", "correctness", "bench_train", "bench_attention", "training")

# Tolerances the correctness rows are judged by (stated in the report).
ONE_STEP_RTOL = 1e-3  # fp32 (no TF32) after one iteration vs the fp64 reference, relative L2
BF16_BAND = 0.15  # |bf16 - fp32| of the mean D and G losses over the run, absolute
FUSED_RTOL = {"fp32": 1e-4, "bf16": 3e-2}  # fused vs explicit attention, relative L2
COMPILED_RTOL = 1e-4  # compiled vs eager G forward, relative L2 (fp32)
RESUME_BAND = 2e-2  # |straight - stopped and resumed| of the EMA weights: 0 unless bf16 kernels

TINY = {
    "name": "gpu-check-tiny",
    "seed": 0,
    "data": {"source": "shapes", "resolution": 32, "num_images": 64, "test_images": 32},
    "model": {"g_channels": 4, "d_channels": 4, "z_dim": 16, "attention_layer": [16]},
    "train": {"steps": 4, "batch_size": 8, "ema_start": 0},
    "eval": {"final": False},
}


# ---- helpers -------------------------------------------------------------------------------------


def append_rows(out: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` to ``<out>/<name>.csv`` (header from the first row; new columns widen it)."""
    path = out / f"{name}.csv"
    old: list[dict[str, Any]] = []
    if path.is_file():
        with path.open(newline="") as handle:
            old = list(csv.DictReader(handle))
    everything = old + rows
    columns: list[str] = []
    for row in everything:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(everything)
    for row in rows:
        print(f"{name}: " + ", ".join(f"{k}={_short(v)}" for k, v in row.items()), flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def read_rows(out: Path, name: str) -> list[dict[str, str]]:
    path = out / f"{name}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def recipe_for(args: argparse.Namespace, shipped: str, overrides: list[str] | None = None):
    """The shipped recipe (or, with --quick, the tiny one) with ``overrides``."""
    from sagan_cli.recipe import load_recipe, resolve_recipe

    if args.quick:
        return resolve_recipe(TINY, overrides or [], origin="gpu-check")
    return load_recipe(shipped, overrides or [])


def session_for(recipe, device: torch.device, num_classes: int):
    from sagan_cli.bench.train import synthetic_session
    from sagan_cli.plugins import get_registry

    return synthetic_session(recipe, get_registry(), device, num_classes)


# ---- steps ---------------------------------------------------------------------------------------


def step_ceilings(args: argparse.Namespace, device: torch.device) -> None:
    """Versions, and the rates no training step can beat: matmul in bf16, fp32, tf32; copies."""
    from sagan_cli.flops import matmul_rate

    n = 256 if args.quick else 8192
    rows: list[dict[str, Any]] = [
        {"name": "torch", "value": torch.__version__, "unit": ""},
        {"name": "cuda", "value": torch.version.cuda or "-", "unit": ""},
        {"name": "device", "value": _device_name(device), "unit": ""},
    ]
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for label, dtype, tf32 in (
            ("matmul_bf16", torch.bfloat16, False),
            ("matmul_fp32", torch.float32, False),
            ("matmul_tf32", torch.float32, True),
        ):
            if label == "matmul_tf32" and device.type != "cuda":
                continue
            torch.backends.cuda.matmul.allow_tf32 = tf32
            rate = matmul_rate(device, dtype, n)
            rows.append({"name": label, "value": rate / 1e12, "unit": "TFLOP/s"})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    size = (64 if args.quick else 1024) * 2**20
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    sync(device)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        target.copy_(source)
        sync(device)
        times.append(time.perf_counter() - start)
    # a copy reads and writes every byte
    rows.append(
        {"name": "copy_bandwidth", "value": 2 * size / np.median(times) / 1e9, "unit": "GB/s"}
    )
    append_rows(args.out, "ceilings", rows)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def step_junit(args: argparse.Namespace, device: torch.device) -> None:
    """pytest's JUnit XML as rows: every GPU test, its outcome and why."""
    path = args.out / "pytest.xml"
    rows = []
    if path.is_file():
        for case in ET.parse(path).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed"}.get(child.tag, child.tag)
                    message = (
                        (child.get("message") or "").splitlines()[0][:200]
                        if child.get("message")
                        else ""
                    )
            rows.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome,
                    "seconds": float(case.get("time") or 0),
                    "message": message,
                }
            )
        path.unlink()  # the CSV carries it; the output folder stays within 8 files
    else:
        rows.append({"test": "-", "outcome": "not run", "seconds": 0.0, "message": "no pytest.xml"})
    append_rows(args.out, "pytest", rows)


def step_correctness(args: argparse.Namespace, device: torch.device) -> None:
    rows = [one_iteration(args, device), *bf16_band(args, device)]
    rows += fused_vs_explicit(args, device)
    rows.append(compiled_vs_eager(args, device))
    append_rows(args.out, "correctness", rows)


def one_iteration(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One iteration of sagan_cifar10 in fp32 on the device vs the same iteration in fp64 on
    the CPU (same initial weights, data and noise): the relative L2 error of all of G's and of
    all of D's weights after it (TF32 off: the fp32 the device computes)."""
    from sagan_cli.device import default_dtype

    overrides = ["train.precision=fp32", "train.memory_format=contiguous"]
    recipe = recipe_for(args, "sagan_cifar10", overrides)
    classes = 10 if recipe.model.conditional else 0
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        tested = session_for(recipe, device, classes)
        start = {
            n: copy.deepcopy(getattr(tested, n).state_dict())
            for n in ("generator", "discriminator")
        }
        tested.advance()
        reference_recipe = recipe_for(args, "sagan_cifar10", ["train.precision=fp64", overrides[1]])
        with default_dtype("fp64"):  # as `sagan train` runs an fp64 recipe: float64 throughout
            reference = session_for(reference_recipe, torch.device("cpu"), classes)
            for name in ("generator", "discriminator"):  # the same starting point, in float64
                getattr(reference, name).load_state_dict(start[name])
            reference.advance()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    # pooled per network: a bias in front of a batch norm has a mathematically zero gradient,
    # and Adam's first step turns its round-off into a full +-lr step in either precision
    errors = []
    for name in ("generator", "discriminator"):
        ours = dict(getattr(tested, name).state_dict())
        theirs = dict(getattr(reference, name).state_dict())
        keys = [k for k in theirs if theirs[k].is_floating_point()]
        errors.append(
            relative(
                torch.cat([ours[k].double().flatten() for k in keys]),
                torch.cat([theirs[k].double().flatten() for k in keys]),
            )
        )
    error = max(errors)
    return {
        "check": "one iteration fp32 vs CPU fp64",
        "value": error,
        "tolerance": ONE_STEP_RTOL,
        "passed": error <= ONE_STEP_RTOL,
    }


def bf16_band(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The same run in bf16 autocast and in fp32: mean losses within ``BF16_BAND``, all finite."""
    from sagan_cli.device import cpu_has_native_bf16

    if device.type == "cpu" and not cpu_has_native_bf16():
        return [{"check": "bf16 vs fp32 losses", "value": math.nan, "tolerance": BF16_BAND,
                 "passed": "skipped: this CPU has no native bf16"}]  # fmt: skip
    steps = 20 if args.quick else 50  # fewer: the first steps' transient dominates a mean
    curves = {}
    for precision in ("fp32", "bf16"):
        recipe = recipe_for(
            args, "sagan_cifar10", [f"train.precision={precision}", "train.bf16_on_cpu=true"]
        )
        session = session_for(recipe, device, 10 if recipe.model.conditional else 0)
        curves[precision] = torch.stack([session.advance() for _ in range(steps)]).float().cpu()
    finite = bool(torch.isfinite(curves["bf16"]).all())
    gap = float((curves["bf16"].mean(0) - curves["fp32"].mean(0)).abs().max())
    return [{
        "check": f"bf16 vs fp32 mean losses over {steps} steps",
        "value": gap,
        "tolerance": BF16_BAND,
        "passed": finite and gap <= BF16_BAND,
    }]  # fmt: skip


def fused_vs_explicit(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """SAGAN's fused attention against its explicit equations: outputs and input gradients."""
    from torch.nn.utils.parametrizations import spectral_norm

    from sagan_cli.api import LayerContext
    from sagan_cli.builtins.attention import SaganParams, build_sagan

    channels, batch = (16, 2) if args.quick else (256, 8)
    sizes = (4, 8) if args.quick else (16, 32, 64)
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        context = LayerContext("g", 128, 0, channels, size, spectral_norm)
        block = build_sagan(SaganParams(), context).to(device).eval()
        with torch.no_grad():
            block.gamma.fill_(0.5)
        for precision in ("fp32", "bf16"):
            x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
            results = []
            explicit = block.forward_explicit
            for forward in (block, lambda t, explicit=explicit: explicit(t)[0]):
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    y = forward(x)
                (gradient,) = torch.autograd.grad(y.float().square().mean(), x)
                results.append((y.float(), gradient))
            (y_fused, g_fused), (y_explicit, g_explicit) = results
            error = max(relative(y_fused, y_explicit), relative(g_fused, g_explicit))
            rows.append({
                "check": f"fused = explicit attention {size}x{size} {precision}",
                "value": error,
                "tolerance": FUSED_RTOL[precision],
                "passed": error <= FUSED_RTOL[precision],
            })  # fmt: skip
    return rows


def compiled_vs_eager(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """G's forward under torch.compile against eager (fp32, TF32 off)."""
    from sagan_cli.components import build_networks

    recipe = recipe_for(args, "sagan_cifar10")
    classes = 10 if recipe.model.conditional else 0
    torch.manual_seed(0)
    generator, _ = build_networks(recipe, classes)
    generator = generator.to(device).eval()
    z = torch.randn(4, recipe.model.z_dim, device=device)
    labels = torch.arange(4, device=device) % classes if classes else None
    backend = "aot_eager" if args.quick else "inductor"  # the quick rehearsal checks the path
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            eager = generator(z, labels)
            compiled = torch.compile(generator, backend=backend)(z, labels)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    error = relative(compiled, eager)
    return {
        "check": f"compiled ({backend}) = eager G forward",
        "value": error,
        "tolerance": COMPILED_RTOL,
        "passed": error <= COMPILED_RTOL,
    }


def step_bench(args: argparse.Namespace, device: torch.device) -> None:
    """Training throughput per layout, precision and compile; attention fused vs explicit; the
    compile break-even, saved where ``train.compile = "auto"`` reads it."""
    from sagan_cli.bench.attention import bench_attention
    from sagan_cli.bench.train import bench_train_step
    from sagan_cli.device import available_memory, cpu_has_native_bf16
    from sagan_cli.execution import record_break_even
    from sagan_cli.plugins import get_registry

    registry = get_registry()
    steps, warmup = (2, 1) if args.quick else (10, 3)
    precisions = ["fp32"]
    if device.type == "cuda" or cpu_has_native_bf16():
        precisions.append("bf16")
    rows: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    shipped = ("sagan_cifar10",) if args.quick else ("sagan_cifar10", "sagan_imagenet128")
    for name in shipped:
        recipe = recipe_for(args, name)
        classes = (
            {"sagan_cifar10": 10, "sagan_imagenet128": 1000}[name]
            if recipe.model.conditional
            else 0
        )
        combos = [
            (False, layout, p) for p in precisions for layout in ("contiguous", "channels_last")
        ]
        if not args.quick:  # compiling costs a minute or more each: the default layout only
            combos.append((True, "channels_last", "bf16"))
        for compiled, layout, precision in combos:
            result = bench_train_step(
                recipe, registry, device, compiled, classes, steps, warmup,
                memory_format=layout, precision=precision, rates=rates,
            )  # fmt: skip
            rows.append({"recipe": name, **result.__dict__})
    append_rows(args.out, "bench_train", rows)
    for name in shipped:
        eager = [
            r
            for r in rows
            if r["recipe"] == name
            and not r["compile"]
            and r["precision"] == "bf16"
            and r["memory_format"] == "channels_last"
        ]
        compiled = [r for r in rows if r["recipe"] == name and r["compile"]]
        if eager and compiled:
            saving_s = (eager[0]["ms_per_step"] - compiled[0]["ms_per_step"]) / 1000
            compile_s = compiled[0]["warmup_s"] - eager[0]["warmup_s"]
            steps_to_repay = math.ceil(compile_s / saving_s) if saving_s > 0 else None
            path = record_break_even(
                device,
                steps_to_repay,
                f"{name}: compile {compile_s:.0f} s, saves {1000 * saving_s:.1f} ms/step",
            )
            append_rows(args.out, "bench_train", [{
                "recipe": name, "device": device.type, "compile": "break-even",
                "steps": steps_to_repay if steps_to_repay is not None else "never",
                "warmup_s": compile_s, "ms_per_step": 1000 * saving_s, "precision": "bf16",
                "memory_format": f"written to {path}",
            }])  # fmt: skip

    sizes = [4, 8] if args.quick else [16, 32, 64, 128]
    channels, batch = (16, 2) if args.quick else (256, 16)
    frame = bench_attention(
        registry, device, "bf16" if "bf16" in precisions else "fp32", sizes, channels, batch,
        repeats=1 if args.quick else 5, memory_budget=available_memory(device) // 2,
    )  # fmt: skip
    append_rows(args.out, "bench_attention", frame.to_dict(orient="records"))


def step_training(args: argparse.Namespace, device: torch.device) -> None:
    """A real run through the CLI on synthetic image files: N steps straight, the same N steps
    stopped by SIGTERM in the middle and resumed, their final weights compared; then a
    ``sagan eval`` of its samples with a randomly initialised Inception (FID images/s)."""
    import tomli_w

    work = Path(tempfile.gettempdir()) / "sagan-gpu-check-work"  # outside --out: 8 files come back
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    count, resolution = (64, 32) if args.quick else (2048, 128)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8)
    np.savez(work / "data.npz", images=images, labels=rng.integers(0, 10, count))
    throughput = [
        r for r in read_rows(args.out, "bench_train")
        if r.get("precision") == "bf16" and r.get("compile") == "False" and r.get("memory_format") == "channels_last"
    ]  # fmt: skip
    it_per_s = float(throughput[-1]["it_per_s"]) if throughput else 1.0
    # two runs of N steps (straight, and stopped + resumed) share the 2 minutes
    steps = 40 if args.quick else max(20, min(2000, int(it_per_s * 55)))
    from sagan_cli.recipe import read_toml

    base = read_toml(REPO / "recipes" / "sagan_imagenet128.toml")
    base.pop("ablate", None)
    if args.quick:
        base = json.loads(json.dumps(TINY))
    base["data"] = {"source": "npz", "path": str(work / "data.npz"), "resolution": resolution}
    base["train"].update(steps=steps, checkpoint_every=steps, sample_every=steps, log_every=1)
    base["eval"] = {"final": False, "batch_size": 250 if not args.quick else 32}
    recipe = work / "recipe.toml"
    recipe.write_text(tomli_w.dumps(base))
    command = [sys.executable, "-m", "sagan_cli", "train", str(recipe), "--device", device.type]
    if device.type == "cpu":  # the bits depend on the thread count: the same for both runs
        command += ["--threads", str(torch.get_num_threads())]

    started = time.perf_counter()
    subprocess.run([*command, "--results", str(work / "straight")], check=True)
    straight_s = time.perf_counter() - started
    stopped_root = work / "stopped"
    process = subprocess.Popen([*command, "--results", str(stopped_root)])
    status_files = lambda: list(stopped_root.glob("*/runs/*/status.json"))  # noqa: E731
    stopped_at = None
    while process.poll() is None:
        for path in status_files():
            status = json.loads(path.read_text() or "{}")
            if status.get("status") == "running" and status.get("step", 0) >= steps // 2:
                process.send_signal(signal.SIGTERM)
                stopped_at = status["step"]
                break
        if stopped_at is not None:
            break
        time.sleep(0.02)
    code = process.wait()
    subprocess.run([*command, "--results", str(stopped_root)], check=True)

    def final(root: Path) -> dict:
        path = next(root.glob(f"*/runs/*/checkpoints/step-{steps:08d}.pt"))
        return torch.load(path, map_location="cpu", weights_only=True)

    a, b = final(work / "straight"), final(stopped_root)
    difference = max(
        float((a["ema"][k].double() - b["ema"][k].double()).abs().max())
        for k in a["ema"]
        if a["ema"][k].is_floating_point()
    )
    from sagan_cli.evaluate.weights import write_random_inception

    weights = write_random_inception(work / "inception.pth")
    samples = 16 if args.quick else 10_000
    run = next((work / "straight").glob("*/runs/*"))
    started = time.perf_counter()
    subprocess.run([
        sys.executable, "-m", "sagan_cli", "eval", str(run), "--num-samples", str(samples),
        "--reference-samples", str(min(count, samples)), "--inception-weights", str(weights),
        "--device", device.type, "--metrics", "fid",
    ], check=True)  # fmt: skip
    eval_s = time.perf_counter() - started
    append_rows(args.out, "training", [
        {"measure": "steps", "value": steps},
        {"measure": "straight run s (with start-up)", "value": straight_s},
        {"measure": "stopped at step", "value": stopped_at if stopped_at is not None else "finished first"},
        {"measure": "stop exit code", "value": code},
        {"measure": "max |straight - resumed| of EMA G weights", "value": difference},
        {"measure": "eval samples", "value": samples},
        {"measure": "eval s (with start-up and reference)", "value": eval_s},
        {"measure": "FID images/s", "value": samples / eval_s},
    ])  # fmt: skip


# ---- report --------------------------------------------------------------------------------------


def step_report(args: argparse.Namespace, device: torch.device) -> None:
    """report.md: every CSV as a table, then the targets, measured against what they ask."""
    lines = [
        f"# GPU check ({'quick rehearsal, ' if args.quick else ''}{time.strftime('%Y-%m-%d')})",
        "",
    ]
    for name in CSV_NAMES:
        rows = read_rows(args.out, name)
        lines += [f"## {name}", ""]
        if not rows:
            lines += ["(not measured: the step failed or ran out of time; see log.txt)", ""]
            continue
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
        lines.append("")
    lines += ["## Targets", "", *targets_table(args.out)]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(targets_table(args.out)))


def _cell(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if not number.is_integer() or abs(number) >= 1e6 else str(int(number))


def targets_table(out: Path) -> list[str]:
    ceilings = {r["name"]: r["value"] for r in read_rows(out, "ceilings")}
    train = read_rows(out, "bench_train")
    imagenet = [r for r in train if r.get("recipe") == "sagan_imagenet128" and r.get("precision") == "bf16" and r.get("compile") in ("False", "True")]  # fmt: skip
    best = max(imagenet, key=lambda r: float(r["it_per_s"]), default=None)
    attention = [r for r in read_rows(out, "bench_attention") if r.get("variant") == "sagan" and r.get("peak_mb") not in ("", None)]  # fmt: skip
    by_size = {int(r["size"]): float(r["peak_mb"]) for r in attention}
    training = {r["measure"]: r["value"] for r in read_rows(out, "training")}
    tests = read_rows(out, "pytest")
    correctness = read_rows(out, "correctness")

    def row(check: str, measured: str, target: str, passed: bool | None) -> str:
        verdict = "–" if passed is None else ("yes" if passed else "**no**")
        return f"| {check} | {measured} | {target} | {verdict} |"

    lines = ["| check | measured | target | met |", "|---|---|---|---|"]
    failing = [t["test"] for t in tests if t["outcome"] in ("failed", "error")]
    passed = sum(t["outcome"] == "passed" for t in tests)
    skipped = sum(t["outcome"] == "skipped" for t in tests)
    verdict = bool(tests) and passed == len(tests)
    if tests and skipped == len(tests) and not torch.cuda.is_available():
        verdict = None  # the rehearsal: GPU tests skip without CUDA, as they should
    lines.append(row(
        "pytest -m gpu", f"{passed} passed, {len(failing)} failed, {skipped} skipped",
        "all pass", verdict,
    ))  # fmt: skip
    bad = [
        c["check"]
        for c in correctness
        if c["passed"] not in ("True",) and not c["passed"].startswith("skipped")
    ]
    lines.append(
        row(
            "correctness",
            f"{len(correctness) - len(bad)}/{len(correctness)} within tolerance",
            "all",
            bool(correctness) and not bad,
        )
    )
    if best is not None:
        lines.append(
            row(
                "sagan_imagenet128 bf16 it/s",
                f"{float(best['it_per_s']):.2f}",
                ">= 5",
                float(best["it_per_s"]) >= 5,
            )
        )
        lines.append(
            row(
                "... fraction of bf16 matmul",
                f"{float(best['fraction_of_matmul']):.0%} of {float(ceilings.get('matmul_bf16', 'nan')):.0f} TFLOP/s",
                ">= 40%",
                float(best["fraction_of_matmul"]) >= 0.4,
            )
        )
    else:
        lines.append(row("sagan_imagenet128 bf16 it/s", "not measured", ">= 5", None))
    if "FID images/s" in training:
        seconds = float(training["eval s (with start-up and reference)"])
        samples = int(float(training["eval samples"]))
        lines.append(
            row(
                f"FID of {samples} samples",
                f"{seconds:.1f} s",
                "< 60 s for 10k",
                seconds < 60 if samples >= 10_000 else None,
            )
        )
    if len(by_size) >= 2:
        small, large = sorted(by_size)[-2:]
        growth = by_size[large] / by_size[small]
        positions = (large / small) ** 2
        lines.append(
            row(
                f"attention peak memory {small}->{large}",
                f"x{growth:.1f} for x{positions:.0f} positions",
                f"linear (not x{positions**2:.0f})",
                growth < 1.5 * positions,
            )
        )
    if "max |straight - resumed| of EMA G weights" in training:
        difference = float(training["max |straight - resumed| of EMA G weights"])
        lines.append(
            row(
                "resume in the middle",
                f"max diff {difference:.3g} (stopped at {training.get('stopped at step')})",
                f"0 (bit-exact) or within the bf16 band ({RESUME_BAND})",
                difference <= RESUME_BAND,
            )
        )
    return lines


STEPS = {
    "ceilings": step_ceilings,
    "junit": step_junit,
    "correctness": step_correctness,
    "bench": step_bench,
    "training": step_training,
    "report": step_report,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    STEPS[args.step](args, torch.device(args.device))


if __name__ == "__main__":
    main()
