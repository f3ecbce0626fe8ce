"""Every bad input, from a flag, a YAML config or a results root, is one `error:` line and exit 2,
found before any work (Ray is never reached, nothing is rendered) and losing nothing already written.

Cases are table-driven: each names the entry point, its arguments and a fragment of the message.
ROOT holds a finished visualization; its files are hashed before and after every case.
"""

import hashlib
import importlib.util
import pathlib

import pytest

from sweep.cli import main as sweep_main

JOBS = pathlib.Path(__file__).resolve().parent.parent / "jobs"
ROOT = "{root}"  # replaced by the written results root
VIS = ["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "0",
       "--steps", "2", "--jitter", "4", "--quiet", "--out", ROOT]
RUN = ["run", "--model", "dev/vit-micro", "--weights", "random", "--steps", "2", "--cpu", "--quiet", "--out", ROOT]
TUNE = ["tune", "--model", "dev/vit-micro", "--weights", "random", "--steps", "2", "--out", ROOT]
GOOD_YAML = "out: {root}\nmodels: [dev/vit-micro]\nweights: random\n"


def vis(*extra):
    return ["sweep", *VIS, *extra]


def run(*extra):
    return ["sweep", *RUN, *extra]


def tune(*extra):
    return ["sweep", *TUNE, *extra]


def yaml(text):
    """A `sweep run --config` case whose config is GOOD_YAML plus `text`."""
    return ["yaml", text]


CASES = [
    # sweep visualize: the recipe
    ("vis-steps-0", vis("--steps", "0"), "--steps: input should be greater than or equal to 1"),
    ("vis-steps-negative", vis("--steps", "-5"), "--steps: input should be greater than or equal to 1"),
    ("vis-steps-text", vis("--steps", "abc"), "argument --steps: invalid int value"),
    ("vis-steps-fraction", vis("--steps", "1.5"), "argument --steps: invalid int value"),
    ("vis-lr-0", vis("--lr", "0"), "--lr: input should be greater than 0"),
    ("vis-lr-negative", vis("--lr", "-1"), "--lr: input should be greater than 0"),
    ("vis-lr-nan", vis("--lr", "nan"), "--lr:"),
    ("vis-lr-inf", vis("--lr", "inf"), "--lr: input should be a finite number"),
    ("vis-tv-negative", vis("--tv", "-1"), "--tv: input should be greater than or equal to 0"),
    ("vis-tv-inf", vis("--tv", "inf"), "--tv: input should be a finite number"),
    ("vis-tv-nan", vis("--tv", "nan"), "--tv:"),
    ("vis-copies-0", vis("--copies", "0"), "--copies: input should be greater than or equal to 1"),
    ("vis-jitter-negative", vis("--jitter", "-1"), "--jitter: input should be greater than or equal to 0"),
    ("vis-image-size-0", vis("--image-size", "0"), "--image-size: input should be greater than or equal to 1"),
    ("vis-image-size-huge", vis("--image-size", "100000"), "image_size must be at most 8192"),
    ("vis-seed-negative", vis("--seed", "-1"), "--seed: input should be greater than or equal to 0"),
    ("vis-seed-huge", vis("--seed", str(2**64)), "--seed: input should be less than or equal to"),
    ("vis-batch-size-0", vis("--batch-size", "0"), "--batch-size: input should be greater than or equal to 1"),
    ("vis-batch-size-negative", vis("--batch-size", "-2"), "--batch-size: input should be greater than or equal"),
    ("vis-recipe-unknown", vis("--recipe", "fancy"), "argument --recipe: invalid choice"),
    # sweep visualize: what to visualize
    ("vis-feature-negative", vis("--feature", "-1"), "--feature (item 1): input should be greater than or equal to 0"),
    ("vis-feature-out-of-range", vis("--feature", "64"), "feature 64 out of range"),
    ("vis-feature-text", vis("--feature", "abc"), "argument --feature: invalid int value"),
    ("vis-layer-out-of-range", vis("--layer", "7"), "layer 7 out of range for dev/vit-micro"),
    ("vis-layer-unknown-name", vis("--layer", "blocks.9"), "unknown layer 'blocks.9'"),
    ("vis-layer-empty", vis("--layer", ""), "--layer:"),
    ("vis-site-empty", vis("--site", ""), "--site: string should have at least 1 character"),
    ("vis-site-unknown", vis("--site", "nonsense"), "allowed: mlp, q, k, v, attn_out"),
    ("vis-site-wrong-kind", vis("--site", "channel"), "site 'channel' is not available"),
    ("vis-model-empty", vis("--model", ""), "--model: string should have at least 1 character"),
    ("vis-model-unknown", vis("--model", "vit_nope"), "unknown model 'vit_nope'"),
    ("vis-weights-empty", vis("--weights", ""), "--weights: string should have at least 1 character"),
    ("vis-weights-missing", vis("--weights", "/nonexistent.pt"), "/nonexistent.pt"),
    ("vis-weights-pretrained-none", vis("--weights", "pretrained"), "has no pretrained weights"),
    ("vis-weights-folder", vis("--weights", "{tmp}"), "weights"),
    ("vis-weights-empty-file", vis("--weights", "{tmp}/empty.pt"), "weights"),
    ("vis-weights-text-file", vis("--weights", "{tmp}/notes.txt"), "weights"),
    ("vis-out-empty", vis("--out", ""), "--out: string should have at least 1 character"),
    ("vis-device-unknown", vis("--device", "warp-drive"), "device 'warp-drive' is not usable here"),
    ("vis-device-empty", vis("--device", ""), "--device: string should have at least 1 character"),
    ("vis-precision-unknown", vis("--precision", "fp16"), "argument --precision: invalid choice"),
    ("vis-compile-unknown", vis("--compile", "maybe"), "argument --compile: invalid choice"),
    ("vis-features-per-pass-0", vis("--features-per-pass", "0"), "--features-per-pass: input should be greater"),
    ("vis-features-per-pass-negative", vis("--features-per-pass", "-1"), "--features-per-pass: input should be"),
    ("vis-other-seed-into-root", vis("--seed", "5"), "already exist under"),
    ("vis-other-lr-into-root", vis("--lr", "0.5"), "already exist under"),
    # sweep run: flags
    ("run-features-0", run("--features", "0"), "--features: input should be greater than or equal to 1"),
    ("run-features-negative", run("--features", "-3"), "--features: input should be greater than or equal to 1"),
    ("run-sample-0", run("--sample", "0"), "--sample: input should be greater than or equal to 1"),
    ("run-sample-negative", run("--sample", "-1"), "--sample: input should be greater than or equal to 1"),
    ("run-sample-seed-negative", run("--sample", "2", "--sample-seed", "-1"), "--sample-seed: input should be"),
    ("run-feature-list-negative", run("--feature-list", "-1"), "--feature-list (item 1): input should be greater"),
    ("run-feature-list-out-of-range", run("--feature-list", "999"), "feature 999 out of range"),
    ("run-workers-0", run("--workers", "0"), "--workers: input should be greater than or equal to 1"),
    ("run-workers-negative", run("--workers", "-1"), "--workers: input should be greater than or equal to 1"),
    ("run-max-workers-0", run("--max-workers", "0"), "--max-workers: input should be greater than or equal to 1"),
    ("run-start-timeout-0", run("--start-timeout", "0"), "--start-timeout: input should be greater than 0"),
    ("run-max-batches-negative", run("--max-batches", "-1"), "--max-batches: input should be greater than or equal"),
    ("run-max-batches-0", run("--max-batches", "0"), "--max-batches: input should be greater than or equal"),
    ("run-assume-tflops-0", run("--dry-run", "--assume-tflops", "0"), "--assume-tflops: input should be greater than 0"),
    ("run-assume-tflops-negative", run("--assume-tflops", "-5"), "--assume-tflops: input should be greater than 0"),
    ("run-assume-tflops-inf", run("--assume-tflops", "inf"), "--assume-tflops:"),
    ("run-features-per-batch-0", run("--features-per-batch", "0"), "--features-per-batch: input should be greater"),
    ("run-site-empty", run("--site", ""), "--site: string should have at least 1 character"),
    ("run-out-empty", run("--out", ""), "--out: string should have at least 1 character"),
    ("run-layer-out-of-range", run("--layers", "99"), "layer 99 out of range"),
    ("run-layer-unknown-name", run("--layers", "blocks.x"), "unknown layer 'blocks.x'"),
    ("run-model-unknown", run("--model", "nope"), "unknown model 'nope'"),
    ("run-model-empty", run("--model", ""), "--model (item 1): string should have at least 1 character"),
    ("run-preset-unknown", ["sweep", "run", "--preset", "everything", "--out", ROOT], "preset: input should be"),
    ("run-steps-0", run("--steps", "0"), "--steps: input should be greater than or equal to 1"),
    ("run-precision-unknown", run("--precision", "fp16"), "argument --precision: invalid choice"),
    ("run-weights-empty", run("--weights", ""), "--weights: string should have at least 1 character"),
    ("run-no-out", ["sweep", "run", "--model", "dev/vit-micro"], "--out: give the results root"),
    ("run-nothing-to-run", ["sweep", "run", "--out", ROOT], "give --config, --preset or --model"),
    ("run-config-missing", ["sweep", "run", "--config", "/nonexistent.yaml"], "cannot read sweep config"),
    # sweep run --config: YAML
    ("yaml-lr-text", yaml("recipe: {lr: abc}"), "recipe.lr: input should be a valid number"),
    ("yaml-steps-text", yaml("recipe: {steps: abc}"), "recipe.steps: input should be a valid integer"),
    ("yaml-steps-fraction", yaml("recipe: {steps: 2.5}"), "recipe.steps: input should be a valid integer"),
    ("yaml-steps-bool", yaml("recipe: {steps: yes}"), "recipe.steps: expected a number, not a boolean"),
    ("yaml-models-number", yaml("models: 5"), "models.0: input should be a valid string"),
    ("yaml-models-mapping", yaml("models: {a: 1}"), "models: input should be a valid tuple"),
    ("yaml-recipe-list", yaml("recipe: [1, 2]"), "recipe: input should be a dictionary"),
    ("yaml-num-cpus-negative", yaml("resources: {num_cpus: -2}"), "resources.num_cpus: input should be greater than 0"),
    ("yaml-num-gpus-negative", yaml("resources: {num_gpus: -1}"), "resources.num_gpus: input should be greater"),
    ("yaml-workers-0", yaml("resources: {workers: 0}"), "resources.workers: input should be greater than or equal"),
    ("yaml-features-word", yaml("features: everything"), "features: input should be a dictionary"),
    ("yaml-features-0", yaml("features: 0"), "features.count: input should be greater than or equal to 1"),
    ("yaml-sample-0", yaml("features: {mode: sample, count: 0}"), "features.count: input should be greater"),
    ("yaml-feature-mode-unknown", yaml("features: {mode: best}"), "features.mode: input should be 'all', 'first'"),
    ("yaml-feature-list-empty", yaml("features: {mode: list, indices: []}"), "needs a non-empty 'indices'"),
    ("yaml-feature-list-negative", yaml("features: [-1]"), "features.indices.0: input should be greater"),
    ("yaml-beta1-1", yaml("recipe: {beta1: 1.0}"), "recipe.beta1: input should be less than 1"),
    ("yaml-beta2-negative", yaml("recipe: {beta2: -0.1}"), "recipe.beta2: input should be greater than or equal"),
    ("yaml-eps-0", yaml("recipe: {eps: 0}"), "recipe.eps: input should be greater than 0"),
    ("yaml-tv-inf", yaml("recipe: {tv: .inf}"), "recipe.tv: input should be a finite number"),
    ("yaml-lr-nan", yaml("recipe: {lr: .nan}"), "recipe.lr:"),
    ("yaml-color-std-negative", yaml("recipe: {color_std: -1}"), "recipe.color_std: input should be greater"),
    ("yaml-color-mean-negative", yaml("recipe: {color_mean: -1}"), "recipe.color_mean: input should be greater"),
    ("yaml-offset-std-negative", yaml("recipe: {offset_std: -0.5}"), "recipe.offset_std: input should be greater"),
    ("yaml-defaults-unknown", yaml("recipe: {defaults: fancy}"), "recipe.defaults: input should be 'tuned', 'paper' or 'best'"),
    ("yaml-recipe-unknown-key", yaml("recipe: {stepz: 3}"), "recipe.stepz: unknown key; allowed: accentuate, accentuate_weight, beta1"),
    ("yaml-unknown-key", yaml("layerz: [1]"), "layerz: unknown key; allowed: base_seed"),
    ("yaml-base-seed-negative", yaml("base_seed: -1"), "base_seed: input should be greater than or equal to 0"),
    ("yaml-features-per-batch-0", yaml("features_per_batch: 0"), "features_per_batch: input should be greater"),
    ("yaml-max-attempts-0", yaml("max_attempts: 0"), "max_attempts: input should be greater than or equal to 1"),
    ("yaml-precision-unknown", yaml("engine: {precision: fp16}"), "engine.precision: input should be 'auto'"),
    ("yaml-memory-fraction-0", yaml("engine: {memory_fraction: 0}"), "engine.memory_fraction: input should be"),
    ("yaml-engine-unknown-key", yaml("engine: {speed: max}"), "engine.speed: unknown key; allowed: adam, compile"),
    ("yaml-preset-list", yaml("preset: [1]"), "preset: input should be 'paper' or 'smoke' or 'demo'"),
    ("yaml-storage-options-number", yaml("storage_options: 5"), "storage_options: input should be a valid dictionary"),
    ("yaml-layers-mapping", yaml("layers: [{a: 1}]"), "layers.0"),
    ("yaml-out-empty", ["yaml-raw", "out: ''\nmodels: [dev/vit-micro]\n"], "out: string should have at least 1"),
    ("yaml-weights-number", yaml("weights: 5"), "weights: input should be a valid string"),
    ("yaml-site-number", yaml("site: 3"), "site: input should be a valid string"),
    ("yaml-not-a-mapping", ["yaml-raw", "- a\n- b\n"], "must be a mapping of keys to values"),
    ("yaml-syntax-error", ["yaml-raw", "models: [a\n"], "cannot read sweep config"),
    ("yaml-no-models", ["yaml-raw", "out: {root}\n"], "the sweep names no models"),
    # sweep tune
    ("tune-grid-text", tune("--grid", "lr=abc"), "bad grid values"),
    ("tune-grid-nan", tune("--grid", "lr=nan"), "--grid lr (item 1)"),
    ("tune-grid-unknown-name", tune("--grid", "xx=1"), "bad grid item"),
    ("tune-search-0", tune("--search", "0"), "--search: input should be greater than or equal to 1"),
    ("tune-features-0", tune("--features", "0"), "--features: input should be greater than or equal to 1"),
    ("tune-reference-count-0", tune("--reference-count", "0"), "--reference-count: input should be greater"),
    ("tune-robustness-draws-0", tune("--robustness-draws", "0"), "--robustness-draws: input should be greater"),
    ("tune-cpus-0", tune("--cpus-per-trial", "0"), "--cpus-per-trial: input should be greater than 0"),
    ("tune-gpus-negative", tune("--gpus-per-trial", "-1"), "--gpus-per-trial: input should be greater than or"),
    ("tune-steps-0", tune("--steps", "0"), "--steps: input should be greater than or equal to 1"),
    ("tune-unit-seed-negative", tune("--unit-seed", "-1"), "--unit-seed: input should be greater than or equal"),
    # sweep atlas
    ("atlas-out-empty", ["sweep", "atlas", "--results", ROOT, "--out", ""], "--out: string should have at least"),
    ("atlas-results-empty", ["sweep", "atlas", "--results", "", "--out", "{tmp}/site"], "--results: string should"),
    ("atlas-page-size-0", ["sweep", "atlas", "--results", ROOT, "--out", "{tmp}/site", "--page-size", "0"],
     "--page-size: input should be greater than or equal to 1"),
    ("atlas-site-is-root", ["sweep", "atlas", "--results", ROOT, "--out", ROOT], "atlas output folder"),
    ("atlas-site-in-images", ["sweep", "atlas", "--results", ROOT, "--out", ROOT + "/images/site"], "atlas output folder"),
    ("atlas-no-results", ["sweep", "atlas", "--results", "{tmp}/nothing", "--out", "{tmp}/site"], "no features"),
    # the jobs
    ("ablations-limit-0", ["ablations", "--experiment", "frequency", "--val", "{tmp}", "--val-solution",
                           "{tmp}/x.csv", "--limit", "0", "--out", ROOT], "--limit: input should be greater"),
    ("ablations-batch-size-0", ["ablations", "--experiment", "frequency", "--val", "{tmp}", "--val-solution",
                                "{tmp}/x.csv", "--batch-size", "0", "--out", ROOT], "--batch-size: input should"),
    ("ablations-actors-0", ["ablations", "--experiment", "frequency", "--val", "{tmp}", "--val-solution",
                            "{tmp}/x.csv", "--actors", "0", "--out", ROOT], "--actors: input should be greater"),
    ("ablations-val-empty", ["ablations", "--experiment", "frequency", "--val", "", "--val-solution",
                             "{tmp}/x.csv", "--out", ROOT], "--val: string should have at least 1 character"),
    ("ablations-experiment-unknown", ["ablations", "--experiment", "colour", "--val", "{tmp}", "--out", ROOT],
     "argument --experiment: invalid choice"),
    ("ablations-out-empty", ["ablations", "--experiment", "frequency", "--val", "{tmp}", "--val-solution",
                             "{tmp}/x.csv", "--out", ""], "--out: string should have at least 1 character"),
    ("top-images-k-0", ["top_images", "--model", "dev/vit-micro", "--images", "{tmp}", "--k", "0", "--out", ROOT],
     "--k: input should be greater than or equal to 1"),
    ("top-images-limit-negative", ["top_images", "--model", "dev/vit-micro", "--images", "{tmp}", "--limit", "-3",
                                   "--out", ROOT], "--limit: input should be greater than or equal to 1"),
    ("top-images-batch-size-0", ["top_images", "--model", "dev/vit-micro", "--images", "{tmp}", "--batch-size",
                                 "0", "--out", ROOT], "--batch-size: input should be greater than or equal to 1"),
    ("activation-maps-actors-0", ["activation_maps", "--model", "dev/vit-micro", "--layer", "1", "--feature", "1",
                                  "--images", "{tmp}", "--actors", "0", "--out", ROOT], "--actors: input should be"),
    ("activation-maps-feature-negative", ["activation_maps", "--model", "dev/vit-micro", "--layer", "1",
                                          "--feature", "-1", "--images", "{tmp}", "--out", ROOT],
     "--feature (item 1): input should be greater than or equal to 0"),
    ("invariance-features-per-layer-0", ["unit_invariance", "--model", "dev/vit-micro", "--results", ROOT,
                                         "--images", "{tmp}", "--features-per-layer", "0"],
     "--features-per-layer: input should be greater than or equal to 1"),
    ("all-models-workers-0", ["all_models", "--preset", "smoke", "--workers", "0", "--out", ROOT],
     "--workers: input should be greater than or equal to 1"),
]


def test_enough_cases():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A results root holding one finished visualization, and a folder of odd files."""
    root = tmp_path_factory.mktemp("root")
    tmp = tmp_path_factory.mktemp("files")
    assert sweep_main([a.replace(ROOT, str(root)) for a in VIS]) == 0
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    return root, tmp


def snapshot(root: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def job_main(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_work(monkeypatch):
    """Reaching Ray or the renderer means a bad value got through to work: fail loudly."""
    def refuse(*_, **__):
        raise AssertionError("work started for a bad input")

    monkeypatch.setattr("sweep.cli.connect_ray", refuse)
    monkeypatch.setattr("sweep.work.batch.render", refuse)
    return refuse


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(name, argv, message, written, no_work, capsys, monkeypatch):
    root, tmp = written
    before = snapshot(root)

    def fill(a: str) -> str:
        return a.replace(ROOT, str(root)).replace("{tmp}", str(tmp))

    entry, *args = argv
    if entry in ("yaml", "yaml-raw"):
        text = (GOOD_YAML + args[0] + "\n") if entry == "yaml" else args[0]
        config = tmp / f"{name}.yaml"
        config.write_text(fill(text))
        entry, args = "sweep", ["run", "--config", str(config)]
    args = [fill(a) for a in args]
    try:
        if entry == "sweep":
            code = sweep_main(args)
        else:
            module = job_main(entry)
            monkeypatch.setattr(module, "connect_ray", no_work, raising=False)
            code = module.main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert fill(message) in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert snapshot(root) == before, "a bad input changed what was already written"
