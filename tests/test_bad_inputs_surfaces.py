"""Bad inputs on the surfaces added after the first hardening pass (issue 27): model arguments and
names, taps, the figures script, the labels job, the atlas, Ray addresses, the jobs' image sources,
weights pins, GPU types and counts. Each case: exit 2, one `error:` line, no traceback, found before
any work (Ray and the renderer never reached), nothing created or changed on disk: the written root
stays as it was, an --out that did not exist still does not, and the working folder stays empty.

Placeholders: {root} a results root with one visualization of dev/vit-micro; {tmp} a folder of odd
files (empty.pt, notes.txt, vocab8.txt: 8 concepts, micro.pt: dev/vit-micro's random weights); {fresh}
a path that does not exist (it must not after the case); {images} a folder of 3 small PNGs; {empty} an
empty folder.
"""

import hashlib
import importlib.util
import pathlib

import pytest

from sweep.cli import main as sweep_main

REPO = pathlib.Path(__file__).resolve().parent.parent
VIS = ["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "0",
       "--steps", "2", "--quiet", "--out", "{fresh}"]
RUN = ["run", "--model", "dev/vit-micro", "--weights", "random", "--steps", "2", "--cpu", "--quiet",
       "--out", "{fresh}"]
MODELS = ["models", "--model", "dev/vit-micro"]
TUNE = ["tune", "--model", "dev/vit-micro", "--weights", "random", "--steps", "2", "--out", "{fresh}"]
GOOD_YAML = "out: {fresh}\nmodels: [dev/vit-micro]\nweights: random\n"
LABELS = ["labels", "--model", "dev/vit-micro", "--weights", "random", "--judge-weights", "random",
          "--vocabulary", "{tmp}/vocab8.txt", "--images", "{images}", "--out", "{fresh}"]
TOP = ["top_images", "--model", "dev/vit-micro", "--weights", "random", "--images", "{images}", "--out", "{fresh}"]
MAPS = ["activation_maps", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature", "0",
        "--images", "{images}", "--out", "{fresh}"]
ABL = ["ablations", "--experiment", "frequency", "--models", "dev/vit-micro", "--weights", "random",
       "--out", "{fresh}"]
FIG = ["figures", "progression", "--results", "{root}", "--model", "dev/vit-micro", "--out", "{fresh}/fig"]
ATLAS = ["sweep", "atlas", "--results", "{root}", "--out", "{fresh}"]


def vis(*extra):
    return ["sweep", *VIS, *extra]


def run(*extra):
    return ["sweep", *RUN, *extra]


def models(*extra):
    return ["sweep", *MODELS, *extra]


def tune(*extra):
    return ["sweep", *TUNE, *extra]


def labels(*extra):
    return [*LABELS, *extra]


def fig(*extra, base=FIG):
    return [*base, *extra]


def yaml(text):
    return ["yaml", text]


CASES = [
    # --model-arg and NAME[key=value]: whatever the constructor raises is one line
    ("arg-embed-dim-indivisible", vis("--model-arg", "embed_dim=7"), "refuses the arguments embed_dim=7"),
    ("arg-img-size-negative", vis("--model-arg", "img_size=-1"), "refuses the arguments img_size=-1"),
    ("arg-img-size-0", vis("--model-arg", "img_size=0"), "img_size=0"),
    ("arg-num-heads-0", vis("--model-arg", "num_heads=0"), "refuses the arguments num_heads=0"),
    ("arg-patch-size-0", vis("--model-arg", "patch_size=0"), "patch_size=0"),
    ("arg-mlp-ratio-negative", vis("--model-arg", "mlp_ratio=-1"), "mlp_ratio=-1"),
    ("arg-unknown-keyword", vis("--model-arg", "no_such_arg=1"), "refuses the arguments no_such_arg=1"),
    ("arg-img-size-text", vis("--model-arg", "img_size=abc"), "img_size=abc"),
    ("arg-depth-0", vis("--model-arg", "depth=0"), "depth=0"),
    ("arg-in-name", vis("--model", "dev/vit-micro[embed_dim=7]"), "refuses the arguments embed_dim=7"),
    ("arg-in-name-forward-fails", vis("--model", "dev/vit-micro[img_size=4]"), "img_size=4"),
    ("arg-no-equals", vis("--model-arg", "img_size"), "expected key=value"),
    ("arg-empty-key", vis("--model-arg", "=3"), "expected key=value"),
    ("arg-key-not-a-name", vis("--model-arg", "1x=3"), "expected key=value"),
    ("arg-list-value", vis("--model-arg", "img_size=[1,2]"), "the value must be a number"),
    ("arg-mapping-value", vis("--model-arg", "img_size={a: 1}"), "must be a number"),
    ("arg-twice-different", vis("--model-arg", "img_size=32", "--model-arg", "img_size=64"), "given twice"),
    ("arg-empty", vis("--model-arg", ""), "--model-arg"),
    ("arg-name-unclosed", vis("--model", "dev/vit-micro[img_size=32"), "dev/vit-micro[img_size=32"),
    ("models-img-size-huge", models("--model-arg", "img_size=100000"), "input size 100000 px; allowed: 1 to 8192"),
    ("models-img-size-negative", models("--model-arg", "img_size=-1"), "img_size=-1"),
    ("models-embed-dim", models("--model-arg", "embed_dim=7"), "refuses the arguments embed_dim=7"),
    ("run-arg-embed-dim", run("--model-arg", "embed_dim=7"), "refuses the arguments embed_dim=7"),
    ("run-arg-img-size-huge", run("--model-arg", "img_size=9000"), "input size 9000 px"),
    ("yaml-model-args-bad", yaml("model_args: [embed_dim=7]"), "refuses the arguments embed_dim=7"),
    ("yaml-model-args-not-pair", yaml("model_args: [img_size]"), "expected key=value"),
    ("yaml-model-args-number", yaml("model_args: [5]"), "model_args"),
    ("tune-arg-embed-dim", tune("--model-arg", "embed_dim=7"), "refuses the arguments embed_dim=7"),
    ("top-arg-embed-dim", [*TOP, "--model-arg", "embed_dim=7"], "refuses the arguments embed_dim=7"),
    ("maps-arg-embed-dim", [*MAPS, "--model-arg", "embed_dim=7"], "refuses the arguments embed_dim=7"),
    ("labels-arg-embed-dim", labels("--model-arg", "embed_dim=7"), "refuses the arguments embed_dim=7"),
    ("ablations-arg-embed-dim", [*ABL, "--val", "{images}", "--val-solution", "{tmp}/solution.csv",
                                 "--model-arg", "embed_dim=7"], "refuses the arguments embed_dim=7"),
    # --tap
    ("tap-pipe", vis("--tap", "blocks.0|blocks.1"), "one module path per --tap"),
    ("tap-empty", vis("--tap", ""), "--tap"),
    ("tap-unknown-module", vis("--tap", "no.such.module"), "no such module"),
    ("tap-path-escape", vis("--tap", "../etc"), "expected a module path"),
    ("tap-space", vis("--tap", "blocks.0 blocks.1"), "expected a module path"),
    ("tap-layer-out-of-range", vis("--tap", "blocks.0", "--layer", "3"), "out of range"),
    ("tap-site-not-output", vis("--tap", "blocks.0", "--layer", "0", "--site", "mlp"), "site 'mlp' is not available"),
    ("models-tap-pipe", models("--tap", "blocks.0|blocks.1"), "one module path per --tap"),
    ("run-tap-pipe", run("--tap", "blocks.0|head"), "one module path per --tap"),
    ("run-tap-unknown", run("--tap", "blocks.9"), "no such module"),
    ("yaml-taps-pipe", yaml("taps: ['blocks.0|blocks.1']"), "one module path per --tap"),
    ("yaml-taps-text", yaml("taps: blocks.0"), "taps"),
    ("name-tap-unknown", vis("--model", "dev/vit-micro[tap=blocks.0|nope]"), "no such module"),
    ("top-tap-pipe", [*TOP, "--tap", "blocks.0|blocks.1"], "one module path per --tap"),
    # analysis/figures.py
    ("fig-out-empty", fig("--out", ""), "--out: give a path"),
    ("fig-out-blank", fig("--out", "   "), "--out: give a path"),
    ("fig-out-folder", fig("--out", "{fresh}/"), "names a folder"),
    ("fig-out-dot", fig("--out", "."), "names a folder"),
    ("fig-out-hidden", fig("--out", "{fresh}/.fig"), "hidden files"),
    ("fig-out-url", fig("--out", "s3://bucket/fig"), "is a URL"),
    ("fig-out-under-file", fig("--out", "{tmp}/notes.txt/fig"), "is a file, not a folder"),
    ("fig-out-unwritable", fig("--out", "/proc/sweep-fig"), "cannot write in"),
    ("fig-sheets-out-file", fig("--out", "{tmp}/notes.txt", base=["figures", "sheets", "--results", "{root}",
                                                                  "--model", "dev/vit-micro"]), "is a file"),
    ("fig-dpi-0", fig("--dpi", "0"), "--dpi: must be 10 to 1200"),
    ("fig-dpi-negative", fig("--dpi", "-5"), "--dpi: must be 10 to 1200"),
    ("fig-dpi-huge", fig("--dpi", "100000"), "--dpi: must be 10 to 1200"),
    ("fig-dpi-tiny", fig("--dpi", "5"), "--dpi: must be 10 to 1200"),
    ("fig-dpi-text", fig("--dpi", "high"), "argument --dpi: invalid int value"),
    ("fig-per-page-0", fig("--per-page", "0"), "--per-page: must be a whole number >= 1"),
    ("fig-columns-0", fig("--columns", "0"), "--columns: must be a whole number >= 1"),
    ("fig-format-unknown", fig("--format", "gif"), "argument --format: invalid choice"),
    ("fig-no-model", ["figures", "progression", "--results", "{root}", "--out", "{fresh}/fig"], "needs --model"),
    ("fig-compare-one", ["figures", "compare", "--results", "{root}", "--models", "dev/vit-micro", "--out",
                         "{fresh}/fig"], "two or more --models"),
    ("fig-model-unknown", fig("--model", "vit_nope"), "unknown model 'vit_nope'"),
    ("fig-model-not-in-root", fig("--model", "dev/deit-micro-distilled"), "no visualized features"),
    ("fig-results-missing", fig("--results", "{fresh}/nothing"), "no features"),
    ("fig-layers-absent", fig("--layers", "2"), "--layers: no visualized features of dev/vit-micro at layer(s) 2; visualized: 1"),
    ("fig-layers-out-of-range", fig("--layers", "1", "99"), "at layer(s) 99"),
    # labels job
    ("labels-k-0", labels("--k", "0"), "--k: input should be greater than or equal to 1"),
    ("labels-k-above-vocabulary", labels("--k", "9"), "--k: 9 is above the vocabulary's 8 concept(s)"),
    ("labels-k-above-imagenet", labels("--k", "1001", "--vocabulary", "imagenet"), "above the vocabulary's 1000"),
    ("labels-visualization-none", labels("--method", "visualization"), "no visualizations of dev/vit-micro"),
    ("labels-visualization-other-model", labels("--method", "visualization", "--out", "{root}", "--model",
                                                "dev/deit-micro-distilled"), "no visualizations of dev/deit-micro"),
    ("labels-vocabulary-empty", labels("--vocabulary", ""), "--vocabulary"),
    ("labels-vocabulary-missing", labels("--vocabulary", "{fresh}/v.txt"), "cannot read it"),
    ("labels-vocabulary-empty-file", labels("--vocabulary", "{tmp}/empty.pt"), "no concepts"),
    ("labels-templates-unknown", labels("--templates", "fancy"), "argument --templates: invalid choice"),
    ("labels-judge-unknown", labels("--judge", "Nope-B-32/openai"), "Nope-B-32"),
    ("labels-judge-no-tag", labels("--judge", "ViT-B-32", "--judge-weights", "pretrained"), "names no pretrained tag"),
    ("labels-judge-weights-unknown", labels("--judge-weights", "maybe"), "argument --judge-weights: invalid choice"),
    ("labels-batch-size-0", labels("--batch-size", "0"), "--batch-size: input should be greater than or equal"),
    ("labels-actors-0", labels("--actors", "0"), "--actors: input should be greater than or equal to 1"),
    ("labels-limit-0", labels("--limit", "0"), "--limit: input should be greater than or equal to 1"),
    ("labels-layer-out-of-range", labels("--layers", "99"), "layer 99 out of range"),
    ("labels-site-unknown", labels("--site", "nonsense"), "nonsense"),
    ("labels-model-unknown", labels("--model", "vit_nope"), "unknown model 'vit_nope'"),
    ("labels-no-images", ["labels", "--model", "dev/vit-micro", "--weights", "random", "--judge-weights", "random",
                          "--out", "{fresh}"], "give the probe images"),
    ("labels-images-missing", labels("--images", "{fresh}/imgs"), "does not exist"),
    ("labels-images-empty", labels("--images", "{empty}"), "no images"),
    ("labels-split-empty", labels("--split", ""), "--split"),
    ("labels-weights-missing", labels("--weights", "{fresh}/w.pt"), "w.pt"),
    ("labels-out-empty", labels("--out", ""), "--out"),
    # the other jobs: image sources and models checked before Ray, nothing made
    ("top-images-missing", [*TOP[:-4], "--images", "{fresh}/imgs", "--out", "{fresh}"], "does not exist"),
    ("top-layer-out-of-range", [*TOP, "--layers", "99"], "layer 99 out of range"),
    ("top-site-unknown", [*TOP, "--site", "nonsense"], "nonsense"),
    ("top-weights-missing", [*TOP, "--weights", "{fresh}/w.pt"], "w.pt"),
    ("maps-layer-out-of-range", [*MAPS[:6], "99", *MAPS[7:]], "layer 99 out of range"),
    ("maps-feature-out-of-range", [*MAPS[:8], "640", *MAPS[9:]], "feature 640 out of range"),
    ("maps-site-unknown", [*MAPS, "--site", "nonsense"], "nonsense"),
    ("maps-images-empty", [*MAPS[:10], "{empty}", *MAPS[11:]], "no images"),
    ("ablations-train-missing", [*ABL, "--train", "{fresh}/train", "--boxes", "{tmp}/boxes.csv"], "does not exist"),
    ("ablations-train-no-boxes", [*ABL, "--train", "{images}"], "--boxes"),
    ("ablations-boxes-missing", [*ABL, "--train", "{images}", "--boxes", "{fresh}/boxes.csv"], "boxes"),
    ("ablations-val-missing", [*ABL, "--val", "{fresh}/val", "--val-solution", "{tmp}/solution.csv"], "val"),
    ("ablations-solution-missing", [*ABL, "--val", "{images}", "--val-solution", "{fresh}/s.csv"], "s.csv"),
    ("ablations-model-unknown", [*ABL[:4], "vit_nope", *ABL[5:], "--val", "{images}", "--val-solution",
                                 "{tmp}/solution.csv"], "unknown model 'vit_nope'"),
    ("ablations-conditions-unknown", [*ABL, "--val", "{images}", "--val-solution", "{tmp}/solution.csv",
                                      "--conditions", "nonsense"], "nonsense"),
    ("tune-reference-missing", tune("--reference", "{fresh}/ref"), "does not exist"),
    ("tune-reference-empty", tune("--reference", "{empty}"), "no images"),
    ("tune-reference-file", tune("--reference", "{tmp}/notes.txt"), "notes.txt"),
    # weights: pins, files, torchvision offline
    ("pin-short", vis("--weights", "{tmp}/micro.pt#sha256=deadbeef"), "malformed pin"),
    ("pin-empty", vis("--weights", "{tmp}/micro.pt#sha256="), "malformed pin"),
    ("pin-not-hex", vis("--weights", "{tmp}/micro.pt#sha256=zzzzzzzzzzzzzzzz"), "malformed pin"),
    ("pin-too-long", vis("--weights", "{tmp}/micro.pt#sha256=" + "0" * 65), "malformed pin"),
    ("pin-wrong", vis("--weights", "{tmp}/micro.pt#sha256=0000000000000000"), "changed since"),
    ("pin-on-missing-file", vis("--weights", "{fresh}/w.pt#sha256=0000000000000000"), "w.pt"),
    ("torchvision-pretrained-offline", ["sweep", "visualize", "--model", "torchvision:resnet18", "--weights",
                                        "pretrained", "--layer", "0", "--feature", "0", "--steps", "1", "--out",
                                        "{fresh}"], "TORCH_HOME"),
    ("torchvision-unknown", models("--model", "torchvision:resnet_nope"), "resnet_nope"),
    # module: names (code by design): a missing module or factory is one line
    ("module-missing", models("--model", "module:no_such_module_xyz:factory"), "no_such_module_xyz"),
    ("module-no-factory", models("--model", "module:os"), "module model 'os': expected module:package.module:factory"),
    ("module-factory-missing", models("--model", "module:os:no_such_factory"), "no_such_factory"),
    # counts above what there is, values ignored without a word
    ("run-features-above-width", run("--features", "1000"), "above the width of every planned layer"),
    ("yaml-sample-above-width", yaml("features: {mode: sample, count: 65}"), "above the width of every"),
    ("yaml-first-above-width", yaml("features: {mode: first, count: 100}"), "(at most 64)"),
    ("run-gpu-type-empty", run("--dry-run", "--gpu-type", ""), "is not a known GPU type"),
    ("run-gpu-type-unknown", run("--dry-run", "--gpu-type", "voodoo5"), "is not a known GPU type"),
    ("run-gpu-type-without-dry-run", run("--gpu-type", "h100"), "--gpu-type: only --dry-run"),
    ("run-price-without-dry-run", run("--price-per-hour", "3"), "--price-per-hour: only --dry-run"),
    ("run-tflops-without-dry-run", run("--assume-tflops", "100"), "--assume-tflops: only --dry-run"),
    # parametrizations
    ("param-unknown", vis("--param", "maco-typo"), "argument --param: invalid choice"),
    ("tune-param-unknown", tune("--param", "lucid"), "argument --param: invalid choice"),
    ("tune-promote-fourier", tune("--param", "fourier", "--promote"), "--promote: the family defaults are for the paper's method"),
    ("yaml-param-unknown", yaml("recipe: {param: magic}"),
     "recipe.param: input should be 'pixel', 'fourier' or 'maco'"),
    # objectives (sweep/method/objective.py)
    ("objective-unknown", vis("--objective", "channel"), "argument --objective: invalid choice"),
    ("position-without-neuron", vis("--position", "3"), "position is for objective neuron only"),
    ("position-negative", vis("--objective", "neuron", "--position", "-1"), "--position: input should be greater"),
    ("position-outside", vis("--objective", "neuron", "--position", "9999"), "recipe position 9999 is outside"),
    ("direction-without-objective", vis("--direction", "1-2"), "direction is for objective direction only"),
    ("direction-missing", vis("--objective", "direction"), "objective direction needs a direction"),
    ("direction-self", vis("--objective", "direction", "--direction", "5-5"), "minus itself"),
    ("direction-unit-outside", vis("--objective", "direction", "--direction", "1-99999"), "outside the site's"),
    ("direction-text-file", vis("--objective", "direction", "--direction", "{tmp}/notes.txt"), "neither A-B nor"),
    ("direction-no-file", run("--objective", "direction", "--direction", "{tmp}/none.npy"),
     "cannot read recipe direction"),
    ("direction-bad-pin", run("--objective", "direction", "--direction", "{tmp}/none.npy#sha256=zz"), "malformed pin"),
    ("tune-direction-missing", tune("--objective", "direction"), "objective direction needs a direction"),
    ("tune-promote-negative", tune("--negative", "--promote"), "would optimize pixel -unit"),
    ("yaml-direction-self", yaml("recipe: {objective: direction, direction: 3-3}"), "minus itself"),
    ("yaml-objective-unknown", yaml("recipe: {objective: neurons}"), "recipe.objective: input should be"),
    ("site-pre-unknown", vis("--site", "mlp_post"), "site 'mlp_post' is not available"),
    ("diversity-0", vis("--diversity", "0"), "--diversity: input should be greater than or equal to 1"),
    ("accentuate-no-photo", vis("--accentuate", "photo:mona_lisa"), "no such photo"),
    ("spectrum-not-folder", vis("--param", "maco", "--spectrum", "{tmp}/notes.txt"), "is not a folder"),
    ("spectrum-empty", run("--param", "maco", "--spectrum", "{tmp}"), "holds no images"),
    ("accentuate-text", run("--accentuate", "{tmp}/notes.txt"), "not a readable image"),
    ("accentuate-fourier", vis("--accentuate", "photo:coffee", "--param", "fourier"), "param pixel only"),
    ("accentuate-weight-negative", tune("--accentuate", "photo:coffee", "--accentuate-weight", "-2"),
     "--accentuate-weight: input"),
    ("diversity-weight-negative", run("--diversity", "2", "--diversity-weight", "-1"), "--diversity-weight: input"),
    ("diversity-weight-nan", tune("--diversity", "2", "--diversity-weight", "nan"), "--diversity-weight: input"),
    # atlas
    ("atlas-workers-0", [*ATLAS, "--workers", "0"], "--workers: input should be greater than or equal to 1"),
    ("atlas-page-size-negative", [*ATLAS, "--page-size", "-1"], "--page-size: input should be greater"),
    ("atlas-out-is-file", ["sweep", "atlas", "--results", "{root}", "--out", "{tmp}/notes.txt"], "is a file"),
    ("atlas-results-is-file", ["sweep", "atlas", "--results", "{tmp}/notes.txt", "--out", "{fresh}"], "no features"),
    # Ray addresses that can never work: refused as flags, before Ray
    ("address-empty", run("--address", ""), "--address"),
    ("address-port-text", run("--address", "127.0.0.1:abc"), "--address"),
    ("address-port-0", run("--address", "127.0.0.1:0"), "--address"),
    ("address-port-huge", run("--address", "127.0.0.1:70000"), "--address"),
    ("address-scheme", run("--address", "http://127.0.0.1:6379"), "--address"),
    ("address-spaces", run("--address", "127.0.0.1 :6379"), "--address"),
    ("labels-address-port-0", labels("--address", "127.0.0.1:0"), "--address"),
    ("top-address-text", [*TOP, "--address", "nowhere"], "--address"),
]


def test_enough_cases():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A results root holding one finished visualization, and folders of odd files and images."""
    import numpy as np
    import torch
    from PIL import Image

    from sweep.models.build import build
    from sweep.models.zoo import get_entry

    root = tmp_path_factory.mktemp("root")
    tmp = tmp_path_factory.mktemp("files")
    assert sweep_main(["visualize", "--model", "dev/vit-micro", "--weights", "random", "--layer", "1", "--feature",
                       "0", "--steps", "2", "--quiet", "--out", str(root)]) == 0
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    (tmp / "vocab8.txt").write_text("\n".join(["music", "dog", "red", "water", "many", "cat", "tree", "car"]) + "\n")
    (tmp / "solution.csv").write_text("ImageId,PredictionString\nimg0,n01440764 1 1 8 8\n")
    (tmp / "boxes.csv").write_text("not boxes\n")
    torch.save(build(get_entry("dev/vit-micro"), "random").state_dict(), tmp / "micro.pt")
    images = tmp_path_factory.mktemp("images")
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / f"img{i}.png")
    empty = tmp_path_factory.mktemp("empty")
    return root, tmp, images, empty


def snapshot(*folders: pathlib.Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def load_main(path: pathlib.Path, monkeypatch, no_work):
    spec = importlib.util.spec_from_file_location(f"bad_input_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "connect_ray", no_work, raising=False)
    return module.main


@pytest.fixture
def no_work(monkeypatch):
    """Reaching Ray or the renderer means a bad value got through to work: fail loudly."""
    def refuse(*_, **__):
        raise AssertionError("work started for a bad input")

    monkeypatch.setattr("sweep.cli.connect_ray", refuse)
    monkeypatch.setattr("sweep.pipelines.cluster.connect_ray", refuse)
    monkeypatch.setattr("sweep.work.batch.render", refuse)
    return refuse


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_made(name, argv, message, written, no_work, capsys, monkeypatch, tmp_path):
    root, tmp, images, empty = written
    fresh = tmp_path / "fresh"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(root, tmp, images, empty)

    def fill(a: str) -> str:
        return (a.replace("{root}", str(root)).replace("{tmp}", str(tmp)).replace("{fresh}", str(fresh))
                .replace("{images}", str(images)).replace("{empty}", str(empty)))

    entry, *args = argv
    if entry in ("yaml",):
        config = tmp_path / f"{name}.yaml"
        config.write_text(fill(GOOD_YAML + args[0] + "\n"))
        entry, args = "sweep", ["run", "--config", str(config)]
    args = [fill(a) for a in args]
    try:
        if entry == "sweep":
            code = sweep_main(args)
        elif entry == "figures":
            code = load_main(REPO / "analysis" / "figures.py", monkeypatch, no_work)(args)
        else:
            code = load_main(REPO / "jobs" / f"{entry}.py", monkeypatch, no_work)(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err[-3000:])
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert fill(message) in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert snapshot(root, tmp, images, empty) == before, "a bad input changed what was already there"
    assert not fresh.exists(), f"a refused command made {sorted(p.name for p in fresh.rglob('*'))[:5]} under --out"
    assert not any(cwd.iterdir()), f"a refused command wrote {sorted(p.name for p in cwd.iterdir())} here"


def test_module_names_in_a_root_are_never_imported(written, tmp_path, monkeypatch):
    """A `module:` model runs code by design, but only when a command or config names it: a results
    root whose rows and folders name one (planted by whoever wrote the root) is read, queried, shown
    in the atlas and the reports without importing anything."""
    import shutil
    import sys

    from sweep.store.layout import FEATURES, partition_value
    from sweep.store.results import Results
    from sweep.views.atlas import build_atlas

    root, *_ = written
    planted = tmp_path / "root"
    shutil.copytree(root, planted)
    marker = tmp_path / "imported"
    package = tmp_path / "code"
    package.mkdir()
    (package / "payload_xyz.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef make():\n    return None\n")
    monkeypatch.syspath_prepend(str(package))
    name = "module:payload_xyz:make"
    source = next((planted / "features").glob("model=*"))
    target = planted / FEATURES.folder(model=name)
    assert target.name == f"model={partition_value(name)}"
    shutil.copytree(source, target)
    results = Results(str(planted))
    assert name in results.models()
    assert len(results.features(model=name)) == 1 and name in set(results.features()["model"])
    build_atlas(str(planted), str(tmp_path / "site"))
    assert sweep_main(["atlas", "--results", str(planted), "--out", str(tmp_path / "site2"), "--quiet"]) == 0
    assert not marker.exists() and "payload_xyz" not in sys.modules
