"""Recipes: pydantic models, TOML loading, ``--set`` overrides and plugin parameters.

A recipe is one TOML file, complete after defaults. Loading is three steps:
parse the file, apply ``--set key=value`` overrides (values parse as TOML), then
validate: first the host's own keys (``extra="forbid"`` everywhere), then each
plugin's parameters with that plugin's model, filling their defaults. The result
is frozen and dumps back to the same TOML.

Plugin tables hold a plugin name plus that plugin's parameters, e.g.
``[model.attention] variant = "sagan"  reduction = 8``. Parameters belong to
the plugin they were written for: when an override switches the plugin
(``--set model.attention.variant=residual``), parameters from the file are
dropped and the new plugin's defaults apply; parameters given by overrides stay
and are validated against the new plugin.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from sagan_cli.api import NormalizationPlugin, Plugin
from sagan_cli.errors import RecipeError, SaganError, did_you_mean
from sagan_cli.metrics import COMPUTATION_NAMES, COMPUTATIONS
from sagan_cli.model import arch
from sagan_cli.plugins import DisabledPlugin, Registry, get_registry, validate_toml_values

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PluginTable(BaseModel):
    """A table that names a plugin; its other keys are that plugin's parameters.

    Each subclass is one place a recipe chooses a plugin: ``kind`` (the plugin kind),
    ``name_key`` (the key holding its name), ``target`` (normalizations: weight or
    feature) and ``axis`` (its short ablation axis name; None: not an axis). The
    recipe's plugin slots (``PLUGIN_SLOTS``) are read off these classes.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: ClassVar[str]
    name_key: ClassVar[str] = "name"
    target: ClassVar[str | None] = None
    axis: ClassVar[str | None] = None


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"  # experiment names: one folder, never a path
MAX_STEPS = 1_000_000_000  # 10^9 generator updates: beyond any real run, within every counter


class DataConfig(_PluginTable):
    kind: ClassVar[str] = "data"
    name_key: ClassVar[str] = "source"
    axis: ClassVar[str | None] = "data"
    source: str = Field("shapes", description="data-source plugin")
    resolution: int = Field(32, description="image size (square)")
    hflip: bool = Field(False, description="random horizontal flips of real images")

    @field_validator("resolution")
    @classmethod
    def _supported(cls, resolution: int) -> int:
        if resolution not in arch.RESOLUTIONS:
            raise ValueError(
                f"Input should be {', '.join(map(str, arch.RESOLUTIONS[:-1]))} or "
                f"{arch.RESOLUTIONS[-1]}"
            )
        return resolution


class AttentionConfig(_PluginTable):
    kind: ClassVar[str] = "attention"
    name_key: ClassVar[str] = "variant"
    axis: ClassVar[str | None] = "attention"
    variant: str = Field("sagan", description="attention plugin")


class NamedPlugin(_PluginTable):
    """A plugin table keyed by ``name`` (norms, augmentation); a bare string is its name."""

    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class GeneratorNorm(NamedPlugin):
    kind: ClassVar[str] = "normalization"
    target: ClassVar[str | None] = "weight"
    axis: ClassVar[str | None] = "g_norm"


class DiscriminatorNorm(NamedPlugin):
    kind: ClassVar[str] = "normalization"
    target: ClassVar[str | None] = "weight"
    axis: ClassVar[str | None] = "d_norm"


class FeatureNorm(NamedPlugin):
    kind: ClassVar[str] = "normalization"
    target: ClassVar[str | None] = "feature"
    axis: ClassVar[str | None] = "features"


class AugmentConfig(NamedPlugin):
    kind: ClassVar[str] = "augment"
    axis: ClassVar[str | None] = "augment"


class NormConfig(_Strict):
    generator: GeneratorNorm = Field(
        GeneratorNorm(name="spectral"), description="weight normalization of every G layer"
    )
    discriminator: DiscriminatorNorm = Field(
        DiscriminatorNorm(name="spectral"), description="weight normalization of every D layer"
    )
    features: FeatureNorm = Field(
        FeatureNorm(name="batchnorm"), description="G's feature normalization"
    )


class ModelConfig(_Strict):
    g_channels: int = Field(64, ge=1, description="G base width (official gf_dim)")
    d_channels: int = Field(64, ge=1, description="D base width (official df_dim)")
    z_dim: int = Field(128, ge=1)
    conditional: bool = Field(False, description="class-conditional (CBN in G, projection in D)")
    attention_layer: list[int] = Field(
        [16], description="feature-map sizes that get attention in G and D; [] = none"
    )
    g_attention_layer: list[int] | None = Field(None, description="G-only override")
    d_attention_layer: list[int] | None = Field(None, description="D-only override")
    attention: AttentionConfig = AttentionConfig()
    norm: NormConfig = NormConfig()

    @field_validator("attention_layer", "g_attention_layer", "d_attention_layer")
    @classmethod
    def _distinct(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and len(set(sizes)) != len(sizes):
            raise ValueError(f"sizes must be distinct, got {sizes}")
        return None if sizes is None else sorted(sizes)


class LossConfig(_PluginTable):
    kind: ClassVar[str] = "loss"
    axis: ClassVar[str | None] = "loss"
    name: str = Field("hinge", description="loss plugin")


class TrainConfig(_Strict):
    steps: int = Field(100_000, ge=1, le=MAX_STEPS, description="generator updates")
    batch_size: int = Field(64, ge=1)
    lr_g: float = Field(1e-4, gt=0, le=1, allow_inf_nan=False)
    lr_d: float = Field(4e-4, gt=0, le=1, allow_inf_nan=False)
    betas: tuple[float, float] = Field((0.0, 0.9), description="Adam betas")
    d_steps: int = Field(1, ge=1, description="D updates per G update")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="0 disables EMA averaging")
    ema_start: int = Field(1000, ge=0, description="EMA copies G until this step")
    precision: Literal["bf16", "fp32", "fp64"] = Field(
        "bf16",
        description="bf16 autocast on CUDA (fp32 elsewhere); fp64: float64 everywhere, a slow "
        "reference for numerical checks",
    )
    bf16_on_cpu: bool = Field(
        False,
        description="with precision = bf16, also autocast on CPUs with native bf16 (AMX, "
        "AVX512-BF16); off by default: it changes the results of CPU runs",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile G and D: true, false, or auto (when the run is long enough "
        "to repay the compile time on this device; never with deterministic = true)",
    )
    memory_format: Literal["auto", "contiguous", "channels_last"] = Field(
        "auto", description="tensor layout of the networks: auto picks the faster on the device"
    )
    deterministic: bool = Field(False, description="deterministic kernels (bitwise resume)")
    augment: AugmentConfig = Field(
        AugmentConfig(name="none"),
        description="augmentation plugin applied to every image D sees (diffaugment)",
    )
    sync_batchnorm: bool = Field(
        True, description="data-parallel runs: G's batch norm uses the global batch's statistics"
    )
    max_loss: float = Field(
        1e5,
        ge=0,
        allow_inf_nan=False,
        description="a run whose mean D or G loss stays beyond this for 3 log lines in a row "
        "has diverged (exit 3); 0: only non-finite losses count",
    )
    log_every: int = Field(100, ge=1)
    sample_every: int = Field(1000, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    structure_samples: int = Field(256, ge=8, description="samples for the structural score")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"each beta must be in [0, 1), got {list(betas)}")
        return betas


class EvalConfig(_Strict):
    every: int = Field(0, ge=0, description="FID every N steps during training (0 = off)")
    num_samples: int = Field(10_000, ge=2, description="generated samples per evaluation")
    metrics: list[str] = Field(
        ["fid", "is", "kid"],
        min_length=1,
        description=", ".join(f"{c.name} ({c.summary})" for c in COMPUTATIONS),
    )
    feature_extractor: list[str] = Field(
        ["inception-v3-compat"],
        min_length=1,
        description="feature spaces: inception-v3-compat, dinov2-vit-s-14/b-14/l-14/g-14 (FD in "
        "DINOv2 space is fd_dinov2)",
    )
    prc_neighborhood: int = Field(3, ge=1, description="k of precision/recall's k-NN balls")
    dc_neighborhood: int = Field(5, ge=1, description="k of density/coverage's k-NN balls")
    reference: Literal["train", "test"] = Field("train", description="real split for FID/KID")
    reference_samples: int = Field(
        10_000, ge=0, description="real images in the reference; 0: the whole split"
    )
    final: bool = Field(True, description="evaluate the final checkpoint after training")
    batch_size: int = Field(64, ge=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in COMPUTATION_NAMES]
        if unknown:
            raise ValueError(
                f"unknown metric {unknown[0]!r};{did_you_mean(unknown[0], COMPUTATION_NAMES)} "
                f"choose from {', '.join(COMPUTATION_NAMES)}"
            )
        return list(dict.fromkeys(names))

    @field_validator("feature_extractor", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("feature_extractor")
    @classmethod
    def _known_extractors(cls, names: list[str]) -> list[str]:
        known = ("inception-v3-compat", *(f"dinov2-vit-{s}-14" for s in "sblg"))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"unknown feature extractor {unknown[0]!r};{did_you_mean(unknown[0], known)} "
                f"choose from {', '.join(known)}"
            )
        return list(dict.fromkeys(names))


class LoggingConfig(_Strict):
    attention_images: int = Field(
        8, ge=0, description="images for the attention statistics at every sample grid (0 = off)"
    )
    tensorboard: bool = Field(False, description="also write TensorBoard events to the run folder")


class TrackConfig(BaseModel):
    """``[track]``: the experiment trackers a run logs to, besides its folder. Keys
    ``<tracker>_<param>`` (``mlflow_uri``, ``wandb_mode``) are each tracker's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backends: list[str] = Field(
        default_factory=list, description="trackers to log to: mlflow, wandb, tensorboard, ..."
    )
    experiment: str | None = Field(
        None, description="the tracker's experiment (default: the recipe's or ablation's name)"
    )


class LaunchConfig(_PluginTable):
    kind: ClassVar[str] = "launcher"
    name_key: ClassVar[str] = "launcher"
    launcher: str = Field("local", description="ablation launcher plugin (sagan ablate)")


class AblateConfig(_Strict):
    axes: dict[str, list[Any]] = Field(default_factory=dict)


class Recipe(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ablate: AblateConfig = AblateConfig()
    launch: LaunchConfig = LaunchConfig()
    logging: LoggingConfig = LoggingConfig()
    track: TrackConfig = TrackConfig()

    @model_validator(mode="after")
    def _placement_exists(self) -> Recipe:
        res = self.data.resolution
        checks = [
            ("model.attention_layer", self.model.attention_layer, arch.shared_sizes(res)),
            ("model.g_attention_layer", self.model.g_attention_layer, arch.generator_sizes(res)),
            (
                "model.d_attention_layer",
                self.model.d_attention_layer,
                arch.discriminator_sizes(res),
            ),
        ]
        for key, sizes, valid in checks:
            bad = [s for s in sizes or [] if s not in valid]
            if bad:
                raise ValueError(
                    f"{key} = {sizes}: {bad} is not a feature-map size the network has at "
                    f"data.resolution = {res}. Valid: {valid} (generator has "
                    f"{arch.generator_sizes(res)}, discriminator has "
                    f"{arch.discriminator_sizes(res)}; attention_layer applies to both, "
                    f"g_attention_layer/d_attention_layer to one)"
                )
        return self

    @property
    def g_attention(self) -> list[int]:
        m = self.model
        return m.attention_layer if m.g_attention_layer is None else m.g_attention_layer

    @property
    def d_attention(self) -> list[int]:
        m = self.model
        return m.attention_layer if m.d_attention_layer is None else m.d_attention_layer


@dataclass(frozen=True)
class PluginSlot:
    """Where a recipe names a plugin: table path and the table class that describes it."""

    path: str
    table: type[_PluginTable]

    @property
    def kind(self) -> str:
        return self.table.kind

    @property
    def name_key(self) -> str:
        return self.table.name_key

    @property
    def target(self) -> str | None:
        return self.table.target

    @property
    def host_keys(self) -> set[str]:
        return set(self.table.model_fields)

    @property
    def axis_path(self) -> str:
        """What its short axis name varies: the table itself where a bare name is a table
        (norms, augmentation), else the key holding the name."""
        return self.path if issubclass(self.table, NamedPlugin) else f"{self.path}.{self.name_key}"


def _plugin_slots(model: type[BaseModel], prefix: str = "") -> list[PluginSlot]:
    found = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _PluginTable):
            found.append(PluginSlot(f"{prefix}{name}", annotation))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_plugin_slots(annotation, f"{prefix}{name}."))
    return found


PLUGIN_SLOTS = tuple(_plugin_slots(Recipe))
# kinds a recipe names several of at once, in a list (each a plugin of that kind, all used)
PLUGIN_LISTS = {"tracker": "track.backends"}
AXIS_ALIASES = {slot.table.axis: slot.axis_path for slot in PLUGIN_SLOTS if slot.table.axis}


@dataclass(frozen=True)
class Override:
    """One ``--set key=value``: the dotted key split into parts, the parsed value, the text."""

    parts: tuple[str, ...]
    value: Any
    text: str

    @property
    def key(self) -> str:
        return ".".join(self.parts)


_KEY_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
_BARE_STRING = re.compile(r"^[^\s\[\]{}\"'=,][^\[\]{}\"'=]*$")


def parse_override(text: str) -> Override:
    """Parse ``train.steps=200``; the value is TOML, or a bare word taken as a string."""
    key, sep, raw_value = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or not all(_KEY_PART.match(p) for p in parts):
        raise RecipeError(
            f"--set '{text}' is not KEY=VALUE with a dotted key, e.g. --set train.steps=200 "
            f"or --set model.attention_layer=[16,32]."
        )
    return Override(parts, parse_value(raw_value, f"--set '{text}'"), text)


def parse_value(raw_value: str, where: str) -> Any:
    """A TOML value, or a bare word (``image-folder``, ``/data/x``) taken as a string."""
    raw_value = raw_value.strip()
    try:
        return tomllib.loads(f"v = {raw_value}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if not _BARE_STRING.match(raw_value):
            detail = str(exc).split(" (at line")[0]
            raise RecipeError(
                f"{where}: the value '{raw_value}' is not valid TOML ({detail}). Quote strings "
                f"with spaces ('description=\"my run\"') and write lists as [16,32]."
            ) from None
        return raw_value


def shipped_recipes_dir() -> Path:
    """The recipes inside the installed wheel, or the repository's ``recipes/`` in a checkout."""
    packaged = Path(__file__).parent / "recipes"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "recipes"


def shipped_recipe_names() -> list[str]:
    return sorted(p.stem for p in shipped_recipes_dir().glob("*.toml"))


def find_recipe(ref: str | Path) -> Path:
    """A recipe path, or a shipped recipe's name (``smoke``, ``recipes/smoke.toml`` anywhere)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("recipes")):
        for candidate in (
            Path("recipes") / f"{path.stem}.toml",
            shipped_recipes_dir() / f"{path.stem}.toml",
        ):
            if candidate.is_file():
                return candidate
    names = shipped_recipe_names()
    raise RecipeError(
        f"Recipe '{ref}' not found: there is no file at {path.resolve()} and no shipped recipe "
        f"named '{path.stem}'.{did_you_mean(path.stem, names)} Give a path to a .toml file or "
        f"one of: {', '.join(names)}."
    )


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"Cannot read recipe {path}: {exc.strerror}.") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RecipeError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line}): a "
            f"recipe is a TOML text file. Is it the file you meant? Re-save it as UTF-8."
        ) from None
    if text.startswith("\ufeff"):  # tomllib's "Invalid statement (at line 1, column 1)"
        raise RecipeError(
            f"{path} starts with a byte order mark (BOM, bytes EF BB BF), which TOML does not "
            f"allow. Re-save it as UTF-8 without BOM (in Notepad: 'UTF-8', not 'UTF-8 with "
            f"BOM'), or remove it: sed -i '1s/^\\xEF\\xBB\\xBF//' {path}"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(
            f"{path} is not valid TOML: {exc}. Fix the syntax at that line and column."
        ) from None


def load_recipe(
    ref: str | Path,
    overrides: Sequence[str | Override] = (),
    registry: Registry | None = None,
) -> Recipe:
    """Find, read, override and fully validate a recipe (plugin parameters included)."""
    path = find_recipe(ref)
    return resolve_recipe(read_toml(path), overrides, origin=str(path), registry=registry)


def resolve_recipe(
    raw: dict[str, Any],
    overrides: Sequence[str | Override] = (),
    *,
    origin: str,
    registry: Registry | None = None,
) -> Recipe:
    """Validate a parsed recipe after applying overrides; ``origin`` names it in errors."""
    registry = registry or get_registry()
    parsed = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    data = apply_overrides(raw, parsed)
    recipe = _validate(data, origin, parsed)
    data = recipe.model_dump(mode="json", exclude_none=True)
    problems = []
    disabled: dict[str, list[str]] = {}  # SAGAN_DISABLED_PLUGINS entry -> the keys it broke
    for slot in PLUGIN_SLOTS:
        table = _get(data, slot.path)
        name = table[slot.name_key]
        params = {k: v for k, v in table.items() if k not in slot.host_keys}
        try:
            entry = registry.get(slot.kind, name, key=f"{slot.path}.{slot.name_key}")
            if slot.target and normalization_plugin(entry.plugin).target != slot.target:
                fitting = [
                    e.name
                    for e in registry.all(slot.kind)
                    if normalization_plugin(e.plugin).target == slot.target
                ]
                raise RecipeError(
                    f"{slot.path}.{slot.name_key} = '{name}' is a {normalization_plugin(entry.plugin).target} "
                    f"normalization; this key takes a {slot.target} normalization: "
                    f"{', '.join(fitting)}."
                )
            validated = registry.validate_params(
                slot.kind, name, params, key=slot.path, table_keys=slot.host_keys
            )
        except DisabledPlugin as exc:
            disabled.setdefault(exc.entry, []).extend(exc.uses)
            continue
        except SaganError as exc:
            keys = getattr(exc, "keys", None) or [slot.path]  # a parameter's, or the table's
            blamed = dict.fromkeys(b for key in keys if (b := _blame(key, parsed)))
            problems.append(f"{exc}{''.join(blamed)}")
            continue
        host = {k: v for k, v in table.items() if k in slot.host_keys}
        _set(data, slot.path, {**host, **validated.model_dump(mode="json")})
    problems += _tracker_problems(data.get("track", {}), registry, parsed, disabled)
    problems += [str(DisabledPlugin(entry, uses)) for entry, uses in disabled.items()]
    if problems:
        raise RecipeError(f"{origin}: " + " ".join(problems))
    recipe = _validate(data, origin, parsed)
    _check_conditioning(recipe, registry, origin)
    return recipe


def tracker_params(track: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``[track]`` keys of tracker ``name`` (``mlflow_uri`` -> ``uri``)."""
    prefix = f"{name}_"
    return {k.removeprefix(prefix): v for k, v in track.items() if k.startswith(prefix)}


def _tracker_problems(
    track: dict[str, Any],
    registry: Registry,
    parsed: list[Override],
    disabled: dict[str, list[str]],
) -> list[str]:
    """Each backend is a registered tracker and each ``<tracker>_<param>`` key one of its
    parameters (checked for every registered tracker, on or not: a typo is said either way)."""
    problems = []
    for index, name in enumerate(track.get("backends", [])):
        key = f"{PLUGIN_LISTS['tracker']}[{index}]"
        try:
            registry.get("tracker", name, key=key)
        except DisabledPlugin as exc:
            disabled.setdefault(exc.entry, []).extend(exc.uses)
        except SaganError as exc:
            blamed = _blame("track.backends", parsed) or ""
            problems.append(f"{exc}{blamed}")
    names = registry.names("tracker")
    for key in track:
        if key in ("backends", "experiment"):
            continue
        owner = next((n for n in names if key.startswith(f"{n}_")), None)
        if owner is None:
            problems.append(
                f"track.{key}: no tracker takes it. [track] holds backends, experiment and "
                f"<tracker>_<parameter> keys for the trackers {', '.join(names) or 'none'}."
                f"{did_you_mean(key, [f'{n}_' for n in names])}"
            )
    for name in names:
        values = tracker_params(track, name)
        if not values:
            continue
        try:
            # the recipe's keys are flat: track.mlflow_uri, not track.mlflow.uri
            registry.validate_params("tracker", name, values, key=f"track.{name}", joiner="_")
        except SaganError as exc:
            keys = [f"track.{name}_{param}" for param in values]
            blamed = "".join(dict.fromkeys(b for k in keys if (b := _blame(k, parsed))))
            problems.append(f"{exc}{blamed}")
    return problems


def normalization_plugin(plugin: Plugin) -> NormalizationPlugin:
    """The registry only holds NormalizationPlugin descriptors under that kind."""
    assert isinstance(plugin, NormalizationPlugin)
    return plugin


def _check_conditioning(recipe: Recipe, registry: Registry, origin: str) -> None:
    features = recipe.model.norm.features.name
    plugin = normalization_plugin(
        registry.get("normalization", features, key="model.norm.features.name").plugin
    )
    if plugin.conditional and not recipe.model.conditional:
        raise RecipeError(
            f"{origin}: model.norm.features = '{features}' needs class labels but "
            f"model.conditional = false. Set model.conditional = true (with a labelled data "
            f"source) or use model.norm.features = 'batchnorm'."
        )
    if recipe.model.conditional and not plugin.conditional:
        conditional = [
            e.name
            for e in registry.all("normalization")
            if normalization_plugin(e.plugin).conditional
        ]
        raise RecipeError(
            f"{origin}: model.conditional = true but model.norm.features = '{features}' ignores "
            f"labels. Use one of {conditional} for a class-conditional generator, or set "
            f"model.conditional = false."
        )


def apply_overrides(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of ``raw`` with overrides set; switching a plugin drops the file's parameters."""
    data = copy.deepcopy(raw)
    for override in overrides:
        node = data
        for depth, part in enumerate(override.parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and plugin_slot_at(override.parts[: depth + 1]):
                child = node[part] = {"name": child}  # "spectral" shorthand for a norm table
            elif not isinstance(child, dict):
                where = ".".join(override.parts[: depth + 1])
                raise RecipeError(
                    f"--set '{override.text}': '{where}' holds a value, not a table, so it has "
                    f"no key '{override.parts[depth + 1]}'."
                )
            node = child
        node[override.parts[-1]] = override.value

    set_keys = {o.key for o in overrides}
    for slot in PLUGIN_SLOTS:
        before, after = _plugin_name(raw, slot), _plugin_name(data, slot)
        if before == after:
            continue
        table = _get_raw(data, slot.path)
        if isinstance(table, dict):
            for key in list(table):
                if key not in slot.host_keys and f"{slot.path}.{key}" not in set_keys:
                    del table[key]
    return data


def _plugin_name(data: dict[str, Any], slot: PluginSlot) -> str | None:
    table = _get_raw(data, slot.path)
    if isinstance(table, str):
        return table
    if isinstance(table, dict):
        return table.get(slot.name_key)
    return None


def plugin_slot_at(parts: tuple[str, ...]) -> PluginSlot | None:
    path = ".".join(parts)
    return next((s for s in PLUGIN_SLOTS if s.path == path), None)


def _validate(data: dict[str, Any], origin: str, overrides: Sequence[Override]) -> Recipe:
    try:
        return validate_toml_values(Recipe, data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = (
                _loc_key(err["loc"]) or str(err["msg"]).removeprefix("Value error, ").split(" ")[0]
            )
            problems.append(_explain(err) + _blame(key, overrides))
        raise RecipeError(
            f"{origin}: " + " ".join(problems) + " Fix it in the recipe or in --set."
        ) from None


def _loc_key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _explain(err: ErrorDetails) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        siblings = _fields_at(loc[:-1])
        return (
            f"Unknown key '{key}'.{did_you_mean(loc[-1], siblings)} "
            f"Keys allowed here: {', '.join(siblings)}."
        )
    if err["type"] == "missing":
        return f"'{key}' is required."
    if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
        value, name_key = err.get("input"), _name_key(loc)
        hint = (
            f" Did you mean {key}.{name_key} = {value!r}?"
            if name_key and isinstance(value, str)
            else ""
        )
        return f"'{key}' must be a table ([{key}] with its own keys), not {value!r}.{hint}"
    if not loc:
        return f"{msg}."
    return f"'{key}' = {err.get('input')!r} is invalid: {msg}."


def _model_at(parts: Sequence[str]) -> type[BaseModel] | None:
    """The recipe model class reached by following field names, or None if it is not one."""
    model: Any = Recipe
    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """Field names of the recipe table at ``loc`` (suggestions for unknown keys)."""
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _name_key(loc: tuple[str, ...]) -> str | None:
    """The key that names the plugin in a plugin table (``variant`` for model.attention)."""
    slot = plugin_slot_at(tuple(loc))
    return slot.name_key if slot else None


def _blame(key: str, overrides: Sequence[Override]) -> str:
    """`` (set by --set ...)`` for the override that gave ``key`` its value: the one setting
    that very key, else one setting a table above it, else one inside it."""
    ranked = (
        [o for o in overrides if o.key == key],
        [o for o in overrides if key.startswith(o.key + ".")],
        [o for o in overrides if o.key.startswith(key + ".")],
    )
    for found in ranked:
        if found:
            return f" (set by --set {found[-1].text})"  # the last of several wins
    return ""


def _get_raw(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _get(data: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(_get_raw(data, path))


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain TOML-able data."""
    return recipe.model_dump(mode="json", exclude_none=True)


_MULTILINE_ARRAY = re.compile(r"\[\n\s*((?:[^\[\]\n]+,\n\s*)*[^\[\]\n]+),\n\s*\]")


def dumps_toml(data: dict[str, Any]) -> str:
    """TOML text with short arrays on one line (``[16, 32]``), checked to parse back to ``data``."""
    text = tomli_w.dumps(data)
    compact = text
    while True:
        joined = _MULTILINE_ARRAY.sub(
            lambda m: "[" + ", ".join(i.strip() for i in m.group(1).split(",\n")) + "]", compact
        )
        if joined == compact:
            break
        compact = joined
    try:
        return compact if tomllib.loads(compact) == data else text
    except tomllib.TOMLDecodeError:
        return text


def recipe_toml(recipe: Recipe) -> str:
    return dumps_toml(recipe_dict(recipe))


def host_field_paths(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every dotted path to a value the recipe models define (plugin parameters excluded)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if (
            isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and not issubclass(annotation, _PluginTable)
        ):
            paths.extend(host_field_paths(annotation, f"{path}."))
        elif isinstance(annotation, type) and issubclass(annotation, _PluginTable):
            paths.extend(f"{path}.{key}" for key in annotation.model_fields)
        elif name != "axes":
            paths.append(path)
    return paths


def table_at(recipe: Recipe, path: str) -> Any:
    """The value at a dotted path of a resolved recipe (e.g. a plugin table)."""
    node: Any = recipe
    for part in path.split("."):
        node = getattr(node, part)
    return node


def field_at(path: str) -> Any:
    """The pydantic field at a dotted recipe path, or None."""
    *parents, last = path.split(".")
    model = _model_at(parents)
    return None if model is None else model.model_fields.get(last)


def split_list(text: str) -> list[str]:
    """Split ``[],[8],[16]`` or ``sagan,"a,b"`` at commas outside brackets and quotes.

    The one parser of comma-separated command-line values (sizes, metrics, seeds,
    axis values); items are stripped, empty ones dropped.
    """
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def check_experiment_name(name: str) -> str:
    """An experiment name is one folder under the results root, never a path out of it."""
    if not re.match(NAME_PATTERN, name):
        raise RecipeError(
            f"--name '{name}' must be letters, digits, '_', '-' and '.', starting with a letter "
            f"or digit: an experiment is one folder under --results (use --results to write "
            f"elsewhere)."
        )
    return name
