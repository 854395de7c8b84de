"""The sagan-cli plugin API, version 1: the one module a plugin imports.

A plugin is a module with ``@hookimpl`` functions, found through the entry-point
group ``sagan_cli`` of an installed package::

    [project.entry-points.sagan_cli]
    my_plugin = "my_package.plugin"

Each hook receives ``register`` and calls it with descriptors: a name, a
one-line summary, a pydantic model of the plugin's parameters (a subclass of
``PluginParams``) and a factory. sagan-cli validates a recipe's parameters with
that model and calls the factory with them and a small context saying where
the object is built. Everything a factory may receive or must return is
defined here; nothing else in ``sagan_cli`` is part of the contract.

This module imports neither torch nor any other heavy package, so listing
plugins stays fast: keep your hook module light too and import torch inside
your factories (or in a module they import).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import pluggy
from pydantic import BaseModel, ConfigDict

from sagan_cli.errors import PlacementUnsupported, PluginError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "API_VERSION",
    "Augment",
    "AugmentPlugin",
    "AttentionMaps",
    "AttentionModule",
    "AttentionPlugin",
    "Critic",
    "DataContext",
    "DataPlugin",
    "DataSource",
    "FeatureNorm",
    "GANLoss",
    "Hookspecs",
    "ImageSet",
    "LaunchContext",
    "Launcher",
    "LauncherPlugin",
    "LayerContext",
    "LossPlugin",
    "NetworkContext",
    "NoParams",
    "NormalizationPlugin",
    "Plugin",
    "PlacementUnsupported",
    "PluginError",
    "PluginParams",
    "Register",
    "RunTask",
    "TensorImageSet",
    "TrackContext",
    "TrackedRun",
    "Tracker",
    "TrackerPlugin",
    "WeightNorm",
    "apply_weight_norm",
    "hookimpl",
]

API_VERSION = 1  # descriptors carry it; a package built for another version is refused clearly
PROJECT = "sagan_cli"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginParams(BaseModel):
    """Base for a plugin's parameter model: unknown keys are errors, values are frozen.

    Fields with defaults become the recipe's defaults; ``Field(description=...)``
    texts appear in ``sagan plugins --json``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(PluginParams):
    """Parameter model for plugins that take none."""


# ---- where a factory builds its object -------------------------------------------------------

WeightNorm = Callable[["nn.Module"], "nn.Module"]
"""Wraps one layer with the network's weight normalization and returns the layer to use.

The built-in ``spectral`` registers a parametrization on the layer itself and
returns that same layer; ``none`` returns it untouched. Always keep the
returned value (``self.conv = weight_norm(nn.Conv2d(...))``).
"""


@dataclass(frozen=True)
class NetworkContext:
    """The network an object is built for."""

    network: Literal["g", "d"]  # generator or discriminator
    resolution: int  # image size of the run (32, 64 or 128)
    num_classes: int  # 0: unconditional

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


@dataclass(frozen=True)
class LayerContext(NetworkContext):
    """One place inside a network: attention blocks and G's feature norms are built here."""

    channels: int  # channels of the (B, C, H, W) feature map
    feature_size: int  # H = W of the feature map
    weight_norm: WeightNorm = field(repr=False)  # this network's weight norm, for your layers
    # The data's declared long-range dependency at this size (``DataSource.partners``):
    # (H*W,) int64, position j's partner is partners[j] (row-major); None: none declared.
    partners: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        net = "generator" if self.network == "g" else "discriminator"
        return f"{net} at {self.feature_size}x{self.feature_size} ({self.channels} channels, {self.resolution}px images)"


@dataclass(frozen=True)
class DataContext:
    """What a data source is built for."""

    name: str  # the name the plugin was registered under
    resolution: int  # images must come out (3, resolution, resolution)


# ---- what factories return ---------------------------------------------------------------------


@runtime_checkable
class AttentionModule(Protocol):
    """An ``nn.Module`` mapping a (B, C, H, W) feature map to the same shape."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class AttentionMaps(Protocol):
    """Optional: an attention module that can show where each position attends.

    ``attention_maps(x)`` returns beta, (B, N, M) with rows summing to 1: for each
    of the N = H*W query positions (row-major), its weights over M attended
    positions laid out on a ``key_grid(H, W) = (h, w)`` grid (h*w = M) that
    covers the feature map (pooled keys: a coarser grid). ``sagan attention``
    and the attention statistics use it; modules without it are skipped with a
    notice.
    """

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor: ...

    def key_grid(self, height: int, width: int) -> tuple[int, int]: ...


@runtime_checkable
class Augment(Protocol):
    """A differentiable augmentation of the images D sees: ``forward(images, generator)``.

    ``images`` are (B, 3, R, R) in [-1, 1]; the result has the same shape and lets
    gradients through to ``images`` (G learns through it). ``generator`` is a
    ``torch.Generator`` on the images' device that the host seeds for every call:
    draw all randomness from it, so a resumed run repeats the same augmentations.
    """

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class FeatureNorm(Protocol):
    """G's feature normalization: ``forward(x, labels)``; ``labels`` is None when unconditional."""

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor: ...


Critic = Callable[["torch.Tensor"], "torch.Tensor"]


class GANLoss:
    """An adversarial loss: subclass it and override ``d_loss`` and ``g_loss``.

    Both map discriminator logits (B,) to a scalar to minimise. ``penalty`` is
    optional: an extra D term computed from the critic itself (``None`` for none);
    sagan-cli evaluates it with attention on a path that supports second
    derivatives, so gradient penalties (WGAN-GP, R1) work with fused attention.
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        return None


class ImageSet(ABC):
    """A split of a data source: item i is (uint8 image (3, R, R), integer label or -1)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


class TensorImageSet(ImageSet):
    """Images already decoded into one uint8 tensor (N, 3, R, R), with optional labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[index])
        return self.images[index], label


class DataSource(ABC):
    """Real images at one resolution, by split, with labels when the data has classes.

    ``check`` is cheap and runs before any work starts (files exist, shapes fit);
    raise ``PluginError`` (or ``sagan_cli.errors.DataError``) with the fix.
    ``split`` may be slow (it may decode or render images).
    """

    def __init__(self, name: str, params: Any, resolution: int) -> None:
        self.name = name
        self.params = params
        self.resolution = resolution

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of classes; 0 when the data is unlabelled."""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",)

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, in label order, when the data knows them (else [])."""
        return []

    def check(self) -> None:  # noqa: B027 - a source with nothing to check keeps this no-op
        """Raise an error naming the fix if the data cannot be delivered as configured."""

    @abstractmethod
    def split(self, name: str) -> ImageSet:
        """The images of split ``name`` (one of ``splits``)."""

    def split_size(self, name: str) -> int:
        """Images in split ``name``; override when counting is cheaper than ``split``."""
        return len(self.split(name))

    def identity(self) -> dict[str, Any]:
        """What determines the images: keys the reference-statistics cache.

        Override ``fingerprint`` (not this) when the images live in files that can
        change under the same parameters.
        """
        return {
            "source": self.name,
            "params": self.params.model_dump(mode="json") if self.params is not None else None,
            "resolution": self.resolution,
            "content": self.fingerprint(),
        }

    def fingerprint(self) -> Any:
        """A cheap summary of the data's content (sizes, times, hashes); None for generated data."""
        return None

    def partners(self, size: int) -> torch.Tensor | None:
        """The long-range dependency the data is built with, when it has a known one.

        For a ``size`` x ``size`` feature map (positions row-major), a (size*size,)
        int64 tensor whose entry j is the position whose content position j must
        agree with (itself where nothing is paired); None (the default) when the
        data declares no such structure. It reaches attention factories as
        ``LayerContext.partners`` (the ``oracle`` attention of sagan-extra-attention
        needs it) and drives the ``partner`` attention statistic.
        """
        return None

    def structural_score(self, images: torch.Tensor) -> dict[str, float] | None:
        """Scores of uint8 samples (B, 3, R, R) needing no Inception net, or None.

        Lower is better and real data scores 0; the headline value is ``structure``.
        """
        return None


@dataclass(frozen=True)
class RunTask:
    """One run of an ablation grid, as a launcher sees it: a run folder to train to the end.

    Any process that sees the results folder can do the work, either by calling
    ``LaunchContext.execute(task)`` (a picklable function: ship it to a Ray or
    SLURM worker) or by running ``task.argv`` as a command. The run records its
    own status in its folder, so a launcher needs to report nothing back.
    """

    run_dir: str
    label: str
    device: str = "auto"
    nproc: int = 1  # processes (GPUs) for this one run: data-parallel when > 1
    threads: int | None = None  # torch threads per process; None: the library default
    inception_weights: str | None = None
    retry_failed: bool = False
    quiet: bool = False  # no progress lines from the run
    tensorboard: bool = False  # also write TensorBoard events (logging.tensorboard)
    track: tuple[str, ...] = ()  # also log to these trackers ([track] backends, --track)

    @property
    def arguments(self) -> tuple[str, ...]:
        """The ``sagan`` command line that trains this task: ``train --resume RUN_DIR ...``."""
        command = ["train", "--resume", self.run_dir, "--device", self.device]
        if self.quiet:
            command += ["--quiet"]
        if self.nproc > 1:
            command += ["--nproc", str(self.nproc)]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if self.inception_weights:
            command += ["--inception-weights", self.inception_weights]
        if self.retry_failed:
            command += ["--retry-failed"]
        if self.tensorboard:
            command += ["--tensorboard"]
        if self.track:
            command += ["--track", ",".join(self.track)]
        return tuple(command)

    @property
    def argv(self) -> tuple[str, ...]:
        """``arguments`` as a process to start with this Python."""
        import sys

        return (sys.executable, "-m", "sagan_cli", *self.arguments)


@dataclass(frozen=True)
class LaunchContext:
    """What a launcher is asked to run, and the host's helpers for doing it.

    ``lost(task, reason)``: tell the host a task's process died without finishing (a
    crashed worker, a job the scheduler ended FAILED, CANCELLED or TIMEOUT, a lost
    node): unless the run recorded its own outcome or another process holds it, it
    is marked ``interrupted`` with ``reason`` (a re-run resumes it) and counts against
    the command's exit code. ``detach``: submit and return without waiting (only
    launchers with ``supports_detach``); ``experiment``: the experiment's name (for
    job names) and ``experiment_dir`` its folder (for the launcher's own records).
    """

    tasks: tuple[RunTask, ...]
    results_root: str
    jobs: int  # runs at once the user asked for (--jobs); a cluster launcher may ignore it
    gpus_per_run: int
    cpus_per_run: int
    execute: Callable[[RunTask], str]  # train one task in the calling process; picklable
    run_here: Callable[[RunTask], str]  # the same, with this terminal's live progress
    poll: Callable[[], None]  # refresh the progress display from the run folders
    report: Callable[[str], None]  # print a line for the user
    lost: Callable[[RunTask, str], None] = lambda task, reason: None
    detach: bool = False
    experiment: str = ""
    experiment_dir: str = ""


class Launcher(ABC):
    """Runs ablation tasks somewhere (processes, a Ray cluster, SLURM) and waits for them.

    ``launch`` returns when every task has ended (call ``context.poll()`` while
    waiting), or at once after submitting when ``context.detach``. Raise
    ``PluginError`` with the fix when the backend is unusable or refuses the work.
    """

    supports_nproc: bool = False  # can a task use several processes (``--nproc``)?
    supports_detach: bool = False  # do submitted tasks outlive the command (``--detach``)?

    def check(self) -> None:  # noqa: B027 - optional
        """Raise ``PluginError`` if the backend is unusable (called before any run starts)."""

    @abstractmethod
    def launch(self, context: LaunchContext) -> None: ...

    def job_states(self, experiment_dir: str) -> dict[str, str]:
        """Run folder -> the scheduler's state of the job that trains it, for ``sagan status``
        (launchers whose jobs outlive the command); empty when it keeps no such record."""
        return {}

    def ended_jobs(self, experiment_dir: str) -> dict[str, str]:
        """Run folder -> why its job ended without finishing it, in the scheduler's words
        (``cancelled (scancel): SLURM job 12_3 ended CANCELLED``), for jobs that outlive the
        command: ``sagan status`` records them in the runs' folders as ``lost`` would."""
        return {}


@dataclass(frozen=True)
class TrackContext:
    """Where a tracker's records go: ``experiment`` (the recipe's or the ablation's name, or
    ``[track] experiment``) and ``results`` (the results folder: the default home of a
    file-based store, e.g. MLflow's ``<results>/mlruns``)."""

    experiment: str
    results: str


@dataclass(frozen=True)
class TrackedRun:
    """One run as a tracker sees it. ``params``: the resolved recipe flattened
    (``model.attention_layer``, ...) plus ``run_id``, ``seed`` and ``sagan_cli_version``.
    ``resume_id``: the tracker's own id of this run from an earlier attempt (continue it);
    ``parent_id``: the tracker's id of the ablation's parent run (a nested run), if any;
    ``group``: the ablation's name (W&B's group), if any."""

    run_id: str
    name: str
    folder: str
    params: dict[str, Any]
    resume_id: str | None = None
    parent_id: str | None = None
    group: str | None = None


class Tracker(ABC):
    """An experiment tracker (MLflow, W&B, TensorBoard, ...): what a run logs, as it happens.

    ``check`` runs before any run starts: raise ``PluginError`` naming the fix when the
    backend cannot be reached. Every other call may raise: the run warns once and goes on
    without the tracker (the run folder stays the source of truth). ``start`` returns the
    tracker's id of the run (kept in the run folder, so a resumed run continues it).
    """

    def check(self) -> None:  # noqa: B027 - optional
        """Raise ``PluginError`` if the backend is unusable (before any run starts)."""

    @abstractmethod
    def start(self, run: TrackedRun) -> str: ...

    @abstractmethod
    def log_metrics(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """``metrics`` at ``step``, keyed ``section/name`` (``train/d_loss``, ``eval/fid``);
        ``tags`` describe them (an evaluation's ``protocol``)."""

    def log_image(self, tag: str, step: int, image: Any) -> None:  # noqa: B027 - optional
        """A uint8 (3, H, W) numpy picture: a sample grid or an attention figure."""

    def log_file(self, path: str) -> None:  # noqa: B027 - optional
        """A file as an artifact (the final summary row, an ablation's summary.csv)."""

    @abstractmethod
    def finish(self, status: str) -> None:
        """The run ended (done, interrupted, failed, diverged); flush and close."""

    def start_group(self, name: str, folder: str, params: dict[str, Any]) -> str | None:
        """An ablation begins: a parent run holding its runs (MLflow); returns its id, or
        None where runs are grouped by name alone (W&B's ``group``)."""
        return None

    def finish_group(self, parent_id: str | None, files: list[str]) -> None:  # noqa: B027
        """The ablation ended: attach ``files`` (summary.csv, summary.md) to its parent."""


def apply_weight_norm(module: nn.Module, weight_norm: WeightNorm) -> nn.Module:
    """Wrap every Conv/Linear/Embedding inside ``module`` with ``weight_norm``; returns ``module``.

    For modules you did not write (timm's, say): build them, then pass them
    through this so that the recipe's weight norm (spectral norm in SAGAN)
    reaches every layer, as it does in the built-in blocks.
    """
    from torch import nn

    wrapped_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, wrapped_types):
                setattr(parent, child_name, weight_norm(child))
    if isinstance(module, wrapped_types):
        return weight_norm(module)
    return module


# ---- descriptors: each plugin kind described once ------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """What a hook registers: a name, a one-line summary, a parameter model and a factory.

    Each subclass is one plugin kind: ``kind`` names it (its hook is
    ``sagan_register_<kind>``), ``calls`` says how its factory is called, ``summary_of_kind``
    what it is; its docstring is the hook's documentation. ``api_version``: the plugin API
    the descriptor was written for; declare it (``api_version=1``). A descriptor without
    one is taken as this API with a note. A factory that cannot build a place (too large a
    feature map, say) raises ``PlacementUnsupported("reason")``.
    """

    kind: ClassVar[str]
    calls: ClassVar[
        str
    ]  # how sagan-cli calls the factory, e.g. "factory(params, context: LayerContext)"
    summary_of_kind: ClassVar[str]
    name: str
    summary: str
    factory: Callable[..., Any]
    params: type[BaseModel] = NoParams
    api_version: int | None = None

    @classmethod
    def factory_arguments(cls) -> int:
        """How many positional arguments the factory is called with."""
        inside = cls.calls[cls.calls.index("(") + 1 : cls.calls.rindex(")")]
        return inside.count(",") + 1


@dataclass(frozen=True, kw_only=True)
class AttentionPlugin(Plugin):
    """Attention blocks: ``factory(params, context: LayerContext) -> nn.Module`` mapping a
    (B, C, H, W) feature map to the same shape.

    The context tells network ``g``/``d``, channels, feature size, resolution, classes,
    the data's declared partners and the network's ``weight_norm``: wrap every layer
    you create with it (or call ``apply_weight_norm`` on a finished module). Implement
    ``AttentionMaps`` to take part in ``sagan attention`` and the attention statistics.
    ``identity_at_init``: the block starts as the identity (SAGAN's gamma = 0), verified
    by ``sagan plugins check``; a function ``params -> bool`` when it depends on them.
    """

    kind: ClassVar[str] = "attention"
    calls: ClassVar[str] = "factory(params, context: LayerContext)"
    summary_of_kind: ClassVar[str] = "attention blocks placed in G and D (model.attention)"
    identity_at_init: bool | Callable[[Any], bool] = False

    def starts_as_identity(self, params: Any) -> bool:
        """Whether a block built with ``params`` claims to start as the identity."""
        claim = self.identity_at_init
        return bool(claim(params) if callable(claim) else claim)


@dataclass(frozen=True, kw_only=True)
class NormalizationPlugin(Plugin):
    """Weight or feature normalizations.

    ``target="weight"``: ``factory(params, context: NetworkContext) -> WeightNorm``,
    applied to every conv, linear and embedding layer of that network.
    ``target="feature"``: ``factory(params, context: LayerContext) -> nn.Module`` with
    ``forward(x, labels)`` (G's norm; ``context.channels`` features).
    ``conditional``: the feature norm uses the labels (class-conditional models).
    """

    kind: ClassVar[str] = "normalization"
    calls: ClassVar[str] = "factory(params, context: NetworkContext or LayerContext)"
    summary_of_kind: ClassVar[str] = "weight norms of G and D, and G's feature norm (model.norm)"
    target: Literal["weight", "feature"]
    conditional: bool = False


@dataclass(frozen=True, kw_only=True)
class LossPlugin(Plugin):
    """Adversarial losses: ``factory(params) -> GANLoss``."""

    kind: ClassVar[str] = "loss"
    calls: ClassVar[str] = "factory(params)"
    summary_of_kind: ClassVar[str] = "adversarial losses (loss.name)"


@dataclass(frozen=True, kw_only=True)
class DataPlugin(Plugin):
    """Data sources: ``factory(params, context: DataContext) -> DataSource`` whose splits
    yield uint8 (3, R, R) images."""

    kind: ClassVar[str] = "data"
    calls: ClassVar[str] = "factory(params, context: DataContext)"
    summary_of_kind: ClassVar[str] = "real images by split (data.source)"


@dataclass(frozen=True, kw_only=True)
class AugmentPlugin(Plugin):
    """Differentiable augmentations: ``factory(params, context: NetworkContext) -> nn.Module``
    with ``forward(images, generator)`` (see ``Augment``).

    Applied to every image D sees, real and generated, in D's and G's steps (as
    DiffAugment does); ``context`` is D's network context (resolution, classes);
    ``train.augment`` chooses one for a run.
    """

    kind: ClassVar[str] = "augment"
    calls: ClassVar[str] = "factory(params, context: NetworkContext)"
    summary_of_kind: ClassVar[str] = "augmentations of every image D sees (train.augment)"


@dataclass(frozen=True, kw_only=True)
class LauncherPlugin(Plugin):
    """Ablation launchers: ``factory(params) -> Launcher``; ``sagan ablate --launcher NAME``
    hands it every run still to do. ``extra``: the pip extra it needs, named in errors."""

    kind: ClassVar[str] = "launcher"
    calls: ClassVar[str] = "factory(params)"
    summary_of_kind: ClassVar[str] = "where ablation runs go (launch.launcher)"
    extra: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrackerPlugin(Plugin):
    """Experiment trackers: ``factory(params, context: TrackContext) -> Tracker``.

    A recipe turns them on with ``[track] backends = ["name", ...]`` (or ``--track``);
    the ``[track]`` keys ``<name>_<param>`` are the tracker's parameters (``mlflow_uri``
    is ``uri`` of ``mlflow``). ``extra``: the pip extra it needs, named in errors.
    """

    kind: ClassVar[str] = "tracker"
    calls: ClassVar[str] = "factory(params, context: TrackContext)"
    summary_of_kind: ClassVar[str] = "experiment trackers a run logs to ([track] backends)"
    extra: str | None = None


class Register(Protocol):
    def __call__(self, plugin: Plugin) -> None: ...


PLUGIN_CLASSES: dict[str, type[Plugin]] = {
    cls.kind: cls
    for cls in (
        AttentionPlugin,
        NormalizationPlugin,
        LossPlugin,
        DataPlugin,
        AugmentPlugin,
        LauncherPlugin,
        TrackerPlugin,
    )
}
KINDS = tuple(PLUGIN_CLASSES)
HOOKS = {kind: f"sagan_register_{kind}" for kind in KINDS}


def _hookspec(descriptor: type[Plugin]) -> Callable[..., None]:
    """The hook of one kind: ``sagan_register_<kind>(register)``, documented by its descriptor."""

    def hook(register: Register) -> None:
        """(replaced below)"""

    hook.__name__ = hook.__qualname__ = HOOKS[descriptor.kind]
    hook.__doc__ = (
        f"Register {descriptor.summary_of_kind}: ``register({descriptor.__name__}(...))``.\n\n"
        + (descriptor.__doc__ or "")
    )
    return hookspec(hook)


class Hookspecs:
    """The hooks sagan-cli calls, one per kind (``sagan_register_<kind>(register)``); implement
    any of them with ``@hookimpl``. Each is documented by its descriptor class above."""


for _descriptor in PLUGIN_CLASSES.values():
    setattr(Hookspecs, HOOKS[_descriptor.kind], staticmethod(_hookspec(_descriptor)))


def hook_names() -> Iterable[str]:
    return HOOKS.values()
