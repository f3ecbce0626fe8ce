"""Recipe tuning on Ray Tune: the paper's lr x TV grids (or a seeded random search) as Tune trials.

Each trial renders the same seeded sample of (layer, feature) units with its (lr, tv) and scores
them (`sweep.work.tuning`, `sweep.method.scores`); its row lands in the results root under `tuning/`. Trials
whose rows exist are not run again, so an interrupted tuning resumes by running the same command.
The winner can be promoted to the family's defaults (`sweep.method.tuned`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from typing import Annotated, Any

import pandas as pd
from pydantic import Field

from sweep.core.errors import SweepError
from sweep.core.redact import redact, secret_values
from sweep.core.validation import Count, Layer, NonNegative, Positive, Seed, Text, config_dataclass
from sweep.method.engine import Engine
from sweep.method.recipe import Recipe
from sweep.method.scores import COMBINED_SCORE_VERSION
from sweep.models.anatomy import anatomy_of
from sweep.models.build import Weights
from sweep.models.names import ModelArg, TapPath, with_args
from sweep.work.tuning import TrialSpec, default_layers, done_trials, run_trial, sample_units, write_trial

log = logging.getLogger(__name__)

#: The paper's grids (paper-method.md section 3.7): lr in {0.01 ... 1.0} x TV multiplier {0.01 ... 100}.
PAPER_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
PAPER_TVS = (0.01, 0.1, 1.0, 10.0, 100.0)
SEARCH_SPACE = {"lr": (0.01, 1.0), "tv": (0.01, 100.0)}
SCORES = ("act_final", "relative_activation", "robustness", "total_variation", "saturated_fraction",
          "spectrum_slope", "combined")


def parse_grid(items: list[str]) -> dict[str, tuple[float, ...]]:
    """["lr=0.01,0.1", "tv=1,10"] (or one "lr=0.01,0.1;tv=1,10") -> {"lr": (...), "tv": (...)}."""
    out: dict[str, tuple[float, ...]] = {}
    for item in (part for arg in items for part in arg.split(";") if part.strip()):
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or name not in ("lr", "tv"):
            raise SweepError(f"bad grid item {item!r}; expected lr=V1,V2,... or tv=V1,V2,...")
        try:
            vals = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise SweepError(f"bad grid values {values!r} for {name}: give numbers separated by commas") from None
        if not vals or any(v <= 0 for v in vals):
            raise SweepError(f"grid {name} needs positive values, got {values!r}")
        out[name] = vals
    return out


@config_dataclass
class TuneJob:
    """What to tune: a model, a sample of its units, and the (lr, tv) points to try. Grid values
    and layers listed twice are tried once."""

    model: Text
    out: Text
    model_args: tuple[ModelArg, ...] = ()  # key=value constructor arguments (sweep.models.names)
    taps: tuple[TapPath, ...] = ()  # explicit modules to read, in place of the inferred blocks
    lrs: Annotated[tuple[Positive, ...], Field(min_length=1)] = PAPER_LRS
    tvs: Annotated[tuple[NonNegative, ...], Field(min_length=1)] = PAPER_TVS
    search: Count | None = None        # N seeded log-uniform points instead of the grid
    search_seed: Seed = 0
    layers: tuple[Layer, ...] | None = None
    features: Count = 4                # units per layer
    unit_seed: Seed = 0
    site: Text | None = None
    weights: Weights = "pretrained"
    base_seed: Seed = 0
    recipe: Recipe = field(default_factory=Recipe)
    reference: Text | None = None
    reference_count: Count = 32
    robustness_draws: Count = 4
    num_gpus: NonNegative = 1.0        # per trial
    num_cpus: Positive = 1.0
    engine: Engine = field(default_factory=Engine)
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "model", with_args(self.model, self.model_args, self.taps))
        object.__setattr__(self, "model_args", ())  # now part of the model's name
        object.__setattr__(self, "taps", ())
        for name in ("lrs", "tvs", "layers"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))

    def points(self) -> list[tuple[float, float]]:
        if self.search is None:
            return list(itertools.product(self.lrs, self.tvs))
        rng = random.Random(self.search_seed)

        def loguniform(lo: float, hi: float) -> float:
            return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.4g}")

        return [(loguniform(*SEARCH_SPACE["lr"]), loguniform(*SEARCH_SPACE["tv"])) for _ in range(self.search)]

    def grid_label(self) -> str:
        if self.search is not None:
            return (f"search {self.search} log-uniform lr {SEARCH_SPACE['lr']} tv {SEARCH_SPACE['tv']} "
                    f"seed {self.search_seed}")
        return f"grid lr={','.join(map(str, self.lrs))} tv={','.join(map(str, self.tvs))}"

    def specs(self) -> list[TrialSpec]:
        anatomy = anatomy_of(self.model)
        site = self.site or anatomy.default_site
        layers = list(self.layers) if self.layers else default_layers(anatomy)
        units = sample_units(anatomy, layers, self.features, site, self.unit_seed, self.recipe)
        return [TrialSpec(anatomy.entry.key, lr, tv, units, self.recipe, site, self.weights, self.base_seed,
                          self.reference, self.reference_count, self.robustness_draws, self.grid_label())
                for lr, tv in self.points()]


@dataclass
class TuneReport:
    trials: pd.DataFrame           # this job's trials (rows read back from the results root)
    ran: int
    skipped: int
    errors: list[str]


def _trainable(config: dict, specs: list[TrialSpec], out: str, storage_options: dict, engine: Engine) -> None:
    """One Tune trial: render, score, write, report."""
    from ray import tune

    from sweep.core.devices import assigned_gpus, resolve_device
    from sweep.models.build import build

    spec = specs[config["trial"]]
    device = resolve_device(None, gpu_ids=assigned_gpus())  # a GPU given but unusable: one line
    net = build(anatomy_of(spec.model).entry, spec.weights, device)
    row = run_trial(spec, net, device, engine, storage_options)
    write_trial(row, spec.model, out, storage_options)
    tune.report({**{k: row[k] for k in SCORES}, "lr": spec.lr, "tv": spec.tv, "trial_key": spec.key})


def trial_resources(job: TuneJob) -> dict:
    """Per-trial Tune resources; GPU requests fall back to CPU on a cluster without GPUs."""
    import ray

    gpus = job.num_gpus
    if gpus > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        log.warning("the Ray cluster has no GPUs: tuning trials run on CPUs")
        gpus = 0
    return {"cpu": job.num_cpus, "gpu": gpus}


@contextlib.contextmanager
def _tune_storage(job: TuneJob):
    """Where Tune keeps its own experiment files: beside the results for a local root (tuning_ray/),
    else a temporary folder (the trial rows in the results root are what resumes a tuning)."""
    from sweep.store.outputs import is_local, open_root

    fs, root = open_root(job.out, job.storage_options)
    if is_local(fs):
        path = os.path.join(os.path.abspath(root), "tuning_ray")
        os.makedirs(path, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="sweep-tune-") as tmp:
            yield tmp


def preflight(job: TuneJob) -> None:
    """What can fail before any trial starts: weights that do not exist, an unwritable root, a
    reference folder without images."""
    from sweep.data.imagenet import image_folder
    from sweep.models.build import check_weights
    from sweep.store.outputs import check_writable, open_root

    check_weights(anatomy_of(job.model).entry, job.weights)
    if job.reference:
        image_folder(job.reference, job.storage_options, limit=1)
    check_writable(*open_root(job.out, job.storage_options), job.out)


def run_tune(job: TuneJob, verbose: int = 0) -> TuneReport:
    """Run the job's missing trials on the connected Ray cluster; returns all of its trials."""
    from ray import tune

    from sweep.store.results import Results

    specs = job.specs()
    preflight(job)
    done = done_trials(job.model, job.out, job.storage_options)
    todo = [s for s in specs if s.key not in done]
    log.info("%s: %d trial(s), %d already in %s", specs[0].model, len(specs), len(specs) - len(todo), job.out)
    errors: list[str] = []
    if todo:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, specs=todo, out=job.out, storage_options=job.storage_options,
                                 engine=job.engine), trial_resources(job))
        with _tune_storage(job) as storage:
            tuner = tune.Tuner(
                trainable, param_space={"trial": tune.grid_search(list(range(len(todo))))},
                tune_config=tune.TuneConfig(metric="combined", mode="max"),
                run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=verbose,
                                          failure_config=tune.FailureConfig(max_failures=1)))
            grid = tuner.fit()
            errors = [f"lr={todo[r.config['trial']].lr} tv={todo[r.config['trial']].tv}: "
                      f"{str(r.error).splitlines()[-1] if str(r.error) else type(r.error).__name__}"
                      for r in grid if r.error is not None]
    keys = {s.key for s in specs}
    try:
        frame = Results(job.out, job.storage_options).tuning(model=specs[0].model)
    except SweepError:  # no trial has ever finished under this root
        frame = pd.DataFrame(columns=["trial", "lr", "tv", "status", *SCORES])
    frame = frame[frame["trial"].isin(keys)].sort_values("combined", ascending=False).reset_index(drop=True)
    return TuneReport(frame, ran=len(todo) - len(errors), skipped=len(specs) - len(todo), errors=errors)


def best_trial(frame: pd.DataFrame) -> pd.Series:
    """The trial with the highest combined score (ties: the lower lr, then the lower tv)."""
    ok = frame[(frame["status"] == "ok") & frame["combined"].notna()]
    if ok.empty:
        raise SweepError("no scored trials to choose from")
    return ok.sort_values(["combined", "lr", "tv"], ascending=[False, True, True]).iloc[0]


def promote_best(job: TuneJob, frame: pd.DataFrame, path=None) -> dict:
    """Store the best trial's (lr, tv) as the model family's defaults, with provenance."""
    from sweep.method.tuned import promote

    best = best_trial(frame)
    anatomy = anatomy_of(job.model)
    provenance = {"model": anatomy.entry.key, "weights": job.weights, "grid": job.grid_label(),
                  "score": f"{COMBINED_SCORE_VERSION} (sweep/method/scores.py), mean over {len(best['unit_layer'])} units",
                  "combined": round(float(best["combined"]), 6), "trials": int(len(frame)),
                  "steps": int(best["steps"]), "reference": str(best["reference"]), "results": job.out,
                  "trial": str(best["trial"])}
    provenance = redact(provenance, secret_values(job.storage_options))  # e.g. a results URL with userinfo
    written = promote(anatomy.entry.family, float(best["lr"]), float(best["tv"]), provenance, path)
    return {"family": anatomy.entry.family, "lr": float(best["lr"]), "tv": float(best["tv"]),
            "path": str(written), **provenance}
