"""CLIP text directions in a layer's space: what a model's layer must show to look like "a dog" to a judge.

    python jobs/text_direction.py --model demo/dinov2-vits14 --layer 9 --text "a dog" "a red car" \
        --judge ViT-B-32/openai --out dirs.npy
    sweep visualize --model demo/dinov2-vits14 --layer 9 --objective direction --direction dirs.npy \
        --feature 0 1 --out results/text

The layer's pooled features and the judge's image embeddings of the same probe images (by default
the shipped photos and their crops, 150 images; --images FOLDER for yours) are tied by a ridge
regression, and each text's embedding is pulled back through it into the layer's space
(sweep/experiments/text_direction.py). Writes the directions as rows of --out (feature i = text i)
and, beside it, --out with .json: the texts, the judge, the probe images and the fit's held-out R²
(how much of the judge's view the layer carries; near 0, the directions mean little).
"""

import argparse
import datetime as dt
import io
import json
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from sweep.cli import MODEL_HELP, gather, guarded, setup_logging  # noqa: E402
from sweep.core.validation import parse  # noqa: E402
from sweep.experiments.text_direction import TextDirectionConfig  # noqa: E402

#: Where each option lands in TextDirectionConfig (field path -> argparse dest).
FIELDS = {"model": "model", "layer": "layer", "texts": "text", "out": "out", "site": "site", "weights": "weights",
          "judge": "judge", "judge_weights": "judge_weights", "templates": "templates", "images": "images",
          "limit": "limit", "device": "device"}


def probe_images(config: TextDirectionConfig) -> dict:
    """name -> (H, W, 3) uint8: the --images folder (at most --limit) or the shipped photos and crops."""
    from sweep.data.imagenet import image_folder
    from sweep.data.photos import photo_crops
    from sweep.experiments.ablations import decode

    if config.images is None:
        crops = photo_crops()
        return dict(list(crops.items())[:config.limit]) if config.limit else crops
    out = {}
    for record in image_folder(config.images, limit=config.limit).records:
        try:
            out[record["image_id"]] = decode(record["path"])
        except ValueError as exc:  # a damaged image is skipped with one line, not the whole fit
            print(f"text_direction.py: skipped {exc}")
    return out


def run(args) -> int:
    import fsspec
    import numpy as np

    from sweep.core.devices import resolve_device
    from sweep.experiments.judge import ClipJudge, templates
    from sweep.experiments.text_direction import fit_readout, probe_views, top_units
    from sweep.models.build import build, check_weights, split_pin
    from sweep.store.outputs import atomic_write

    data, flags = gather(args, FIELDS)
    config = parse(TextDirectionConfig, data, flags=flags)
    anatomy, layer, site = config.checked()
    check_weights(anatomy.entry, config.weights)
    images = probe_images(config)
    device = resolve_device(config.device)
    net = build(anatomy.entry, config.weights, device)
    judge = ClipJudge(config.judge, config.judge_weights, device)
    texts = judge.text(config.texts, ("{}",) if config.templates == "none" else templates(config.templates))
    features, embeddings = probe_views(net, anatomy, layer, site, judge, images, device)
    readout = fit_readout(features, embeddings)
    directions = readout.pull_back(texts.cpu().numpy().astype(np.float64)).astype(np.float32)
    fs, path = fsspec.core.url_to_fs(config.out)
    buf = io.BytesIO()
    np.save(buf, directions, allow_pickle=False)
    atomic_write(fs, path, buf.getvalue())
    described = {"model": anatomy.entry.key, "weights": split_pin(config.weights)[0], "layer": layer, "site": site,
                 "judge": config.judge, "judge_weights": config.judge_weights, "templates": config.templates,
                 "probe": config.images or "photos", "images": readout.images, "ridge": readout.ridge,
                 "r2_heldout": round(readout.r2_heldout, 4), "date": dt.date.today().isoformat(),
                 "features": [{"feature": i, "text": t, "top_units": top_units(directions[i])}
                              for i, t in enumerate(config.texts)]}
    atomic_write(fs, path[:-len(".npy")] + ".json", (json.dumps(described, indent=2) + "\n").encode())
    print(f"{anatomy.entry.key} block {layer} {site}: layer -> {config.judge} fit on {readout.images} probe images, "
          f"held-out R² {readout.r2_heldout:.2f} (ridge {readout.ridge:g})")
    for i, t in enumerate(config.texts):
        units = ", ".join(f"{u} ({w:+.2f})" for u, w in top_units(directions[i], 3))
        print(f"  feature {i}: {t!r}; largest units {units}")
    print(f"wrote {config.out} and its .json; render them with: sweep visualize --model {anatomy.entry.key} "
          f"--layer {layer} --site {site} --objective direction --direction {config.out} "
          f"--feature {' '.join(str(i) for i in range(len(config.texts)))} --out DIR")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="text_direction.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--layer", required=True, help="block index or name")
    p.add_argument("--text", nargs="+", required=True, help="one direction per text (feature i = text i)")
    p.add_argument("--out", required=True, help="the .npy to write (a path or fsspec URL); its .json beside it")
    p.add_argument("--site", help="where in the block (default: the model's, mlp for ViTs)")
    p.add_argument("--weights", help="pretrained (default), random or a weights file")
    p.add_argument("--judge", help="the open_clip model ARCH/TAG whose text and image space is used "
                   "(default ViT-B-32/openai)")
    p.add_argument("--judge-weights", choices=["pretrained", "random"], help="random: a test run, meaningless directions")
    p.add_argument("--templates", choices=["simple", "openai", "none"],
                   help="prompt templates averaged per text (default simple: open_clip's 7; none: the text as it is)")
    p.add_argument("--images", help="a folder of probe images (recursive; default: the shipped photos and crops)")
    p.add_argument("--limit", type=int, help="at most this many probe images")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the machine's accelerator where there is one)")
    args = p.parse_args(argv)
    setup_logging("WARNING")
    return guarded("text_direction.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
