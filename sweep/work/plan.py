"""A sweep's configuration and its deterministic expansion into batches of (model, layer, feature).

Pure Python: no Ray here. The config is a typed dataclass, loadable from YAML or a dict, with
presets ("paper", "smoke", "demo") as starting points that explicit values override.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from sweep.core.errors import SweepError
from sweep.core.validation import Count, Layer, NonNegativeInt, Positive, Seed, Text, config_dataclass, parse
from sweep.method.by_depth import pick_method
from sweep.method.engine import Engine
from sweep.method.objective import objective_for
from sweep.method.recipe import Recipe, config_hash
from sweep.models.anatomy import anatomy_of
from sweep.models.build import Weights
from sweep.models.names import ModelArg, TapPath, with_args
from sweep.models.zoo import ENTRIES
from sweep.work.batch import Batch, check_batch

log = logging.getLogger(__name__)

FEATURE_MODES = ("all", "first", "list", "sample")


@config_dataclass
class FeatureSelection:
    """Which features of each layer: all, the first `count`, an explicit list, or a seeded sample.
    Indices listed twice are computed once."""

    mode: Literal["all", "first", "list", "sample"] = "first"
    count: Count = 16
    indices: tuple[NonNegativeInt, ...] = ()
    seed: Seed = 0

    def __post_init__(self):
        if self.mode == "list" and not self.indices:
            raise ValueError("feature mode 'list' needs a non-empty 'indices'")
        object.__setattr__(self, "indices", tuple(dict.fromkeys(self.indices)))

    def pick(self, width: int, model: str, layer: int) -> list[int]:
        if self.mode == "all":
            return list(range(width))
        if self.mode == "first":
            return list(range(min(self.count, width)))
        if self.mode == "list":
            return list(self.indices)
        # A per-(model, layer) stream, so adding a model never changes another model's sample.
        rng = random.Random(config_hash({"seed": self.seed, "model": model, "layer": layer}))
        return sorted(rng.sample(range(width), min(self.count, width)))


def check_count(features: FeatureSelection, model: str, widths: list[int]) -> None:
    """A count of features above a layer's width takes all its features, with a word; above every
    planned layer's width it is a mistake (nothing but "all" would come of it), and refused."""
    if features.mode not in ("first", "sample") or not widths or features.count <= min(widths):
        return
    if features.count > max(widths):
        raise SweepError(f"feature count {features.count} (--features, features.count) is above the width of every planned layer of {model} "
                         f"(at most {max(widths)}); give at most {max(widths)}, or mode all")
    narrow = sum(1 for w in widths if w < features.count)
    log.warning("%s: %d of %d layer(s) have fewer than %d features (the narrowest %d): all of theirs are planned",
                model, narrow, len(widths), features.count, min(widths))


@config_dataclass
class Resources:
    """Per-worker resources. num_gpus 0 means CPU workers. workers: a fixed count; None means
    elastic, one worker per GPU as GPU nodes join (the autoscaler is asked for what the plan can
    use, capped by max_workers), or per num_cpus CPUs on a Ray without GPUs. start_timeout_s: how
    long the sweep waits with no worker running (GPU nodes take minutes to boot) before it stops.
    allow_cpu_fallback: a worker given a GPU that CUDA cannot use runs on CPU with a warning
    instead of stopping the sweep (for tests)."""

    num_gpus: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    num_cpus: Positive = 1.0
    workers: Count | None = None
    max_workers: Count | None = None
    start_timeout_s: Positive = 900.0
    allow_cpu_fallback: bool = False


@config_dataclass
class ModelSettings:
    """What one model of a sweep does differently from the sweep (`per_model`); None keeps the sweep's.
    A recipe here is merged key by key over the sweep's (`recipe: {steps: 40}` keeps the rest)."""

    weights: Weights | None = None
    layers: tuple[Layer, ...] | None = None
    features: FeatureSelection | None = None
    site: Text | None = None
    # More than one site of the same units, each planned like `site` (the demo: the paper's `mlp` and
    # `mlp_pre`, the same unit before its GELU, side by side on the atlas); replaces `site` when given.
    sites: Annotated[tuple[Text, ...], Field(min_length=1)] | None = None
    recipe: Recipe | None = None
    # A recipe for one of those sites, merged key by key over the model's (the demo: the paper's image
    # at `mlp` beside `recipe: {defaults: best}`'s at `mlp_pre`, the best measured method at its depth).
    site_recipes: dict[Text, Recipe] | None = None

    def __post_init__(self):
        named = self.sites or ((self.site,) if self.site else ())
        stray = [s for s in (self.site_recipes or {}) if s not in named]
        if stray:
            raise ValueError(f"site_recipes names site {stray[0]!r}, which is not one of the model's sites "
                             f"({', '.join(named) or 'none given: name them in sites'})")


@dataclass(frozen=True)
class ModelPlan:
    """The settings one model of a sweep runs with: its per_model values over the sweep's."""

    weights: str
    layers: tuple[int | str, ...] | None
    features: FeatureSelection
    site: str | None
    recipe: Recipe
    sites: tuple[str, ...] | None = None
    site_recipes: dict[str, Recipe] | None = None

    def recipe_at(self, site: str | None) -> Recipe:
        """The recipe of one of the model's sites: its own where `site_recipes` gives one."""
        return (self.site_recipes or {}).get(site, self.recipe)


@config_dataclass
class SweepConfig:
    """Everything a sweep needs; `out` is a path or fsspec URL (file://, s3://...). Models and
    layers listed twice are kept once, in the order first given."""

    out: Text
    models: tuple[Text, ...] = ()
    model_args: tuple[ModelArg, ...] = ()  # key=value constructor arguments for every model (sweep.models.names)
    taps: tuple[TapPath, ...] = ()  # explicit modules to read in every model, in place of the inferred blocks
    layers: tuple[Layer, ...] | None = None
    features: FeatureSelection = field(default_factory=FeatureSelection)
    site: Text | None = None
    weights: Weights = "pretrained"
    base_seed: Seed = 0
    recipe: Recipe = field(default_factory=Recipe)
    features_per_batch: Count = 16
    engine: Engine = field(default_factory=Engine)
    resources: Resources = field(default_factory=Resources)
    max_attempts: Count = 3
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)
    preset: Literal["paper", "smoke", "demo"] | None = None
    per_model: dict[Text, ModelSettings] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if not self.models:
            raise ValueError(f"the sweep names no models; give 'models' or a preset ({', '.join(PRESETS)})")
        models = (with_args(m, self.model_args, self.taps) for m in self.models)
        object.__setattr__(self, "models", tuple(dict.fromkeys(models)))
        per_model = {with_args(m, self.model_args, self.taps): s for m, s in self.per_model.items()}
        stray = [m for m in per_model if m not in self.models]
        if stray:
            raise ValueError(f"per_model names {stray[0]!r}, which is not one of the sweep's models "
                             f"({', '.join(self.models)})")
        object.__setattr__(self, "per_model", per_model)
        object.__setattr__(self, "model_args", ())  # now part of each model's name
        object.__setattr__(self, "taps", ())
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(dict.fromkeys(self.layers)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def plan_for(self, model: str) -> ModelPlan:
        """The settings `model` (as named in `models`) runs with."""
        own = self.per_model.get(model) or ModelSettings()
        return ModelPlan(own.weights or self.weights, own.layers if own.layers is not None else self.layers,
                         own.features or self.features, own.site or self.site, own.recipe or self.recipe,
                         own.sites, own.site_recipes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], flags: dict[str, str] | None = None,
                  source: str = "") -> "SweepConfig":
        """Build from plain data (YAML, or flags gathered by the CLI); a 'preset' supplies defaults
        that the other keys override. `flags` and `source` only make error messages name what the
        user wrote (the flag, or the config file)."""
        data = shorthand(dict(data))
        preset = data.get("preset")
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise SweepError(f"{source + ': ' if source else ''}preset: input should be "
                                 f"{' or '.join(map(repr, PRESETS))}; got {preset!r}")
            base = shorthand(PRESETS[preset]())
            if "models" in data:  # the preset's per-model settings for the models still in the sweep
                named = set(data["models"]) if isinstance(data["models"], (list, tuple)) else set()
                base["per_model"] = {m: s for m, s in base.get("per_model", {}).items() if m in named}
            data = merged(base, data)
        data = _per_model_recipes(data)
        if "out" not in data:
            raise SweepError(f"{source + ': ' if source else ''}out: the sweep has no results root; "
                             "give --out or 'out' in the config")
        return parse(cls, data, flags=flags, source=source)

    @classmethod
    def from_yaml(cls, path: str, flags: dict[str, str] | None = None, **overrides) -> "SweepConfig":
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise SweepError(f"cannot read sweep config {path!r}: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise SweepError(f"sweep config {path!r} must be a mapping of keys to values")
        return cls.from_dict(merged(shorthand(data), overrides), flags, path)


def merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `base`, sections merged key by key: `--steps 60` keeps the rest of the recipe."""
    given = {k: v for k, v in given.items() if v is not None}
    return {**base, **given, **{k: {**base[k], **given[k]} for k in base
                                if isinstance(base[k], dict) and isinstance(given.get(k), dict)}}


def _per_model_recipes(data: dict[str, Any]) -> dict[str, Any]:
    """Each per_model section in full spelling, its recipe merged over the sweep's (a per-model
    `recipe: {steps: 40}` keeps the sweep's lr, TV and jitter), and its site recipes over its own."""
    per_model = data.get("per_model")
    if not isinstance(per_model, dict):
        return data
    base = data.get("recipe") if isinstance(data.get("recipe"), dict) else {}
    out = {}
    for model, settings in per_model.items():
        if isinstance(settings, dict):
            settings = shorthand(dict(settings))
            if isinstance(settings.get("recipe"), dict):
                settings["recipe"] = {**base, **settings["recipe"]}
            if isinstance(settings.get("site_recipes"), dict):
                own = settings["recipe"] if isinstance(settings.get("recipe"), dict) else base
                settings["site_recipes"] = {site: {**own, **r} if isinstance(r, dict) else r
                                            for site, r in settings["site_recipes"].items()}
        out[model] = settings
    return {**data, "per_model": out}


def shorthand(data: dict[str, Any]) -> dict[str, Any]:
    """The short spellings a YAML author reaches for, in full: `models: ViT-B/16` (one model),
    `layers: 11`, `features: all`, `features: 32` (the first 32) and `features: [1, 5]` (a list)."""
    for key in ("models", "layers"):
        if isinstance(data.get(key), (str, int)) and not isinstance(data.get(key), bool):
            data[key] = [data[key]]
    features = data.get("features")
    if isinstance(features, str) and features in FEATURE_MODES:
        data["features"] = {"mode": features}
    elif isinstance(features, int) and not isinstance(features, bool):
        data["features"] = {"mode": "first", "count": features}
    elif isinstance(features, list):
        data["features"] = {"mode": "list", "indices": features}
    return data


def _paper_preset() -> dict:
    """The paper's visualizations: the 38 variants, the original ViTs and the CLIP ViTs."""
    models = [e.key for e in ENTRIES if e.paper_38 or (e.family == "vit" and e.paper_name)]
    models += ["ViT-B-32/openai", "ViT-B-16/openai"]
    # 128 features (1,024 images) per batch keep a GPU busy: the engine's measured rate on an H200
    # (benchmarks/results/2026-11-26-engine-h200.csv); the engine splits a batch that does not fit.
    return {"models": models, "features": {"mode": "first", "count": 256}, "features_per_batch": 128}


def _smoke_preset() -> dict:
    """Two micro models, every layer, 4 features, 4 steps: a whole sweep in about a minute on CPU."""
    return {"models": ["dev/vit-micro", "dev/deit-micro-distilled"], "weights": "random",
            "features": {"mode": "first", "count": 4}, "features_per_batch": 2,
            "recipe": {"steps": 4, "jitter": 4}, "resources": {"num_gpus": 0, "num_cpus": 0.5}}


#: The trained model of the demo preset: real images without a weight hub (sweep.models.packaged).
DEMO_MODEL = "demo/dinov2-vits14"


def _demo_preset() -> dict:
    """The smoke preset plus four units of a trained ViT-S/14 whose weights a package on the index
    ships (blocks 1 and 5, two features each, 40 steps): a newcomer's first results hold real
    feature visualizations, made in a few minutes on a laptop CPU. Each unit twice: the paper's
    recipe at the paper's site, and the best measured method at its depth (`--recipe best`,
    sweep/method/by_depth.py) before the GELU."""
    smoke = _smoke_preset()
    return {**smoke, "models": [*smoke["models"], DEMO_MODEL],
            "per_model": {DEMO_MODEL: {"weights": "pretrained", "layers": [1, 5], "features": 2,
                                       "sites": ["mlp", "mlp_pre"], "recipe": {"steps": 40, "jitter": 32},
                                       "site_recipes": {"mlp_pre": {"defaults": "best"}}}}}


PRESETS = {"paper": _paper_preset, "smoke": _smoke_preset, "demo": _demo_preset}


@dataclass(frozen=True)
class Task:
    """One batch of the plan, with a relative cost for balancing work across workers."""

    batch: Batch
    cost: float

    @property
    def key(self) -> str:
        return self.batch.part_name

    def triples(self) -> list[tuple[str, int, str, int]]:
        b = self.batch
        return [(b.model, b.layer, b.site, f) for f in b.features]


def expand(config: SweepConfig, skip: set[tuple[str, int, str, int]] | None = None) -> list[Task]:
    """The plan: batches of features per (model, layer, site), in config order, minus `skip`.

    Every model, layer, site and feature is validated here, before any work starts; one named twice
    (by alias, by layer name and index) is planned once.
    """
    skip = skip or set()
    tasks = []
    # A model named by key and by alias, or a layer by index and by name, is planned once.
    anatomies = {a.entry.key: a for a in map(anatomy_of, config.models)}
    plans: dict[str, ModelPlan] = {}
    for m in config.models:  # a model named twice runs with the settings per_model gives either name
        key = anatomy_of(m).entry.key
        if key not in plans or m in config.per_model:
            plans[key] = config.plan_for(m)
    for key, anatomy in anatomies.items():
        plan = plans[key]
        blocks = anatomy.blocks if plan.layers is None else list(
            {b.index: b for b in (anatomy.block(l) for l in plan.layers)}.values())
        cost_per_image = flops_to_block(key)
        given = plan.sites or ((plan.site,) if plan.site else (None,))  # None: the model's, or recipe best's
        for wanted in dict.fromkeys(given):
            chosen = {b.index: pick_method(plan.recipe_at(wanted), wanted, anatomy, b) for b in blocks}  # (site, recipe)
            for block in blocks:
                block.site(chosen[block.index][0])  # every layer has the site, before anything else is said about them
            goals = {b.index: objective_for(chosen[b.index][1], b, chosen[b.index][0]) for b in blocks}  # a direction file: its rows
            counts = {b.index: goals[b.index].count(b.width(chosen[b.index][0])) for b in blocks}
            check_count(plan.features, key, list(counts.values()))
            for block in blocks:
                site, recipe = chosen[block.index]
                feats = plan.features.pick(counts[block.index], key, block.index)
                goals[block.index].check(anatomy, block, site, feats)
                todo = [f for f in feats if (key, block.index, site, f) not in skip]
                for i in range(0, len(todo), config.features_per_batch):
                    chunk = tuple(todo[i:i + config.features_per_batch])
                    batch = Batch(key, block.index, site, chunk, plan.weights, config.base_seed, recipe)
                    tasks.append(Task(batch, cost_per_image[block.index] * len(chunk)))
    if tasks:
        check_batch(tasks[0].batch)
    return tasks


def check_plan(config: SweepConfig) -> list[Task]:
    """The whole plan, with everything checked that can be checked before a worker starts: models,
    layers, sites and features (`expand`), pretrained weights' availability (weights a package ships
    are downloaded and converted here, once), and weights from a file, loaded once per model on the
    CPU (readable, of the right shape, finite). No Ray, and no writes but the weights cache."""
    from sweep.models.build import check_weights

    tasks = expand(config)
    if not tasks:
        raise SweepError("the sweep plan is empty: no (model, layer, feature) to visualize")
    weights = {t.batch.model: t.batch.weights for t in tasks}
    lacking = [m for m, w in weights.items() if w == "pretrained" and not anatomy_of(m).entry.has_pretrained]
    if lacking:
        raise SweepError(f"{', '.join(lacking)} has no pretrained weights; use weights: random or a PATH")
    for m, w in weights.items():
        check_weights(anatomy_of(m).entry, w)
    return tasks


def flops_to_block(name: str) -> list[float]:
    """Forward FLOPs of one image up to each block (counted on the meta device with the anatomy)."""
    return list(anatomy_of(name).flops)


#: Forward + input gradient over forward alone: 2.04 for ViT-B/16 at its last block, counted by
#: torch's FlopCounterMode (benchmarks/bench_engine.py, step_gflop_per_image 69.8 vs 34.2).
STEP_FLOPS_PER_FORWARD = 2.0


def plan_summary(config: SweepConfig, tasks: list[Task]) -> list[dict]:
    """Per model: layers, batches, features, and the estimated compute of the plan.

    Cost model: each feature runs `iterations` steps on `copies` images; a step is one forward to
    the hooked block plus an input gradient (weights are frozen: no weight gradient), counted as
    STEP_FLOPS_PER_FORWARD times the forward FLOPs.
    """
    out: dict[str, dict] = {}
    for t in tasks:
        recipe = t.batch.recipe
        row = out.setdefault(t.batch.model, {"model": t.batch.model, "layers": set(), "batches": 0,
                                             "features": 0, "tflop": 0.0})
        row["layers"].add(t.batch.layer)
        row["batches"] += 1
        row["features"] += len(t.batch.features)
        row["tflop"] += STEP_FLOPS_PER_FORWARD * t.cost * recipe.copies * recipe.iterations / 1e12
    for row in out.values():
        row["layers"] = len(row["layers"])
    return list(out.values())


