"""The paper's figures from a results root: progression, model comparison (e.g. ViT vs CLIP), contact sheets.

    .venv/bin/python analysis/figures.py progression --results R --model B_16_imagenet1k --out fig/progression
    .venv/bin/python analysis/figures.py compare --results R --models B_16_imagenet1k ViT-B/16 --out fig/vit_clip
    .venv/bin/python analysis/figures.py sheets --results R --model B_16_imagenet1k --out fig/sheets

Each figure is written as OUT.png (300 dpi) and OUT.pdf (or --format png svg ...); sheets are paged
(--per-page, default 64), one file per page under the --out folder. Titles, captions (layer, site,
feature, final activation) and full model names are on the figures.
"""

import argparse
import io
import os
import posixpath
import tempfile

import numpy as np
from PIL import Image

from sweep.cli import guarded
from sweep.core.errors import SweepError
from sweep.models.anatomy import anatomy_of
from sweep.store.results import Results
from sweep.views.figures import FORMATS, Style, comparison, contact_sheets, progression, save


def loader(results: Results):
    """A feature's PNG from the root as an array, or None (shown as a grey cell) when unreadable."""
    def load(image_path):
        try:
            data = results.fs.cat_file(posixpath.join(results.root, str(image_path)))
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
        except (OSError, ValueError, SyntaxError):
            return None
    return load


def rows_of(results: Results, model: str, layers=None):
    """A model's rows; one line when it has no visualized feature, or none at a layer --layers names."""
    key = anatomy_of(model).entry.key
    rows = results.features(model=key)
    if rows.empty or not (rows["status"] == "ok").any():
        raise SweepError(f"no visualized features of {key} under {results.root!r}; run `sweep run` for it first")
    have = sorted(set(int(x) for x in rows.loc[rows["status"] == "ok", "layer"]))
    missing = [layer for layer in layers or () if layer not in have]
    if missing:
        raise SweepError(f"--layers: no visualized features of {key} at layer(s) {', '.join(map(str, missing))}; "
                         f"visualized: {', '.join(map(str, have))}")
    return key, rows


#: Raster resolutions allowed: a poster's print resolution is 600; 1,200 is already 16x the pixels of 300.
DPI_RANGE = (10, 1200)


def check_out(out: str, folder: bool) -> None:
    """--out, before any work: a local path whose last part names a file (or, for sheets, a folder),
    in a folder that exists (or will be made) and can be written. Nothing is made here."""
    if not out.strip() or "\x00" in out:
        raise SweepError("--out: give a path (a file name without suffix; a folder for sheets)")
    if "://" in out:
        raise SweepError(f"--out: {out!r} is a URL; figures are written to a local path")
    name = os.path.basename(os.path.normpath(out))
    if not folder and (out.endswith(("/", os.sep)) or name in ("", ".", "..")):
        raise SweepError(f"--out: {out!r} names a folder; give a file name without suffix, e.g. "
                         f"{out.rstrip('/')}/figure")
    if not folder and name.startswith("."):
        raise SweepError(f"--out: {out!r} would write hidden files ({name}.png); give a name that does not "
                         "start with '.'")
    target = os.path.abspath(out if folder else os.path.dirname(os.path.abspath(out)))
    existing = target
    while not os.path.exists(existing):  # the nearest folder that exists decides whether it can be made
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise SweepError(f"--out: {existing!r} is a file, not a folder")
    try:  # a probe file, not os.access: root passes access checks on read-only mounts and /proc
        fd, probe = tempfile.mkstemp(prefix=".sweep-probe-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise SweepError(f"--out: cannot write in {existing!r} ({exc.strerror or exc})") from None


def run(args) -> int:
    need = {"progression": "--model", "sheets": "--model", "compare": "--models"}[args.figure]
    if not getattr(args, need.lstrip("-")):
        raise SweepError(f"{args.figure} needs {need}")
    if args.figure == "compare" and len(args.models) < 2:
        raise SweepError("compare needs two or more --models (e.g. a ViT and a CLIP)")
    for flag in ("per_page", "columns"):
        if getattr(args, flag) < 1:
            raise SweepError(f"--{flag.replace('_', '-')}: must be a whole number >= 1, got {getattr(args, flag)}")
    if not DPI_RANGE[0] <= args.dpi <= DPI_RANGE[1]:
        raise SweepError(f"--dpi: must be {DPI_RANGE[0]} to {DPI_RANGE[1]}, got {args.dpi}")
    check_out(args.out, folder=args.figure == "sheets")
    results = Results(args.results)
    load, style = loader(results), Style(dpi=args.dpi)
    if args.figure == "sheets":
        key, rows = rows_of(results, args.model, args.layers)
        layers = args.layers or sorted(set(int(x) for x in rows.loc[rows["status"] == "ok", "layer"]))
        for layer in layers:
            figs = contact_sheets(rows, key, int(layer), load, per_page=args.per_page, style=style)
            for p, fig in enumerate(figs):
                stem = os.path.join(args.out, f"{key.replace('/', '__')}-layer{layer}-page{p + 1:03d}")
                print("\n".join(save(fig, stem, args.format, args.dpi)))
        return 0
    if args.figure == "progression":
        key, rows = rows_of(results, args.model, args.layers)
        fig = progression(rows, key, load, args.layers, style=style)
    else:
        fig = comparison(dict(rows_of(results, m, args.layers) for m in args.models), load, args.layers, args.columns,
                         style)
    print("\n".join(save(fig, args.out, args.format, args.dpi)))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figure", choices=["progression", "compare", "sheets"])
    p.add_argument("--results", required=True, help="results root (path or fsspec URL)")
    p.add_argument("--out", required=True, help="path without suffix (a folder for sheets)")
    p.add_argument("--model", help="for progression and sheets")
    p.add_argument("--models", nargs="+", help="for compare: two or more, e.g. a ViT and a CLIP")
    p.add_argument("--layers", type=int, nargs="+", help="default: every visualized layer (compare: --columns "
                   "layers at the same relative depth of each model)")
    p.add_argument("--columns", type=int, default=4, help="compare without --layers: layers per model (default 4)")
    p.add_argument("--per-page", type=int, default=64, help="sheets: features per page (default 64)")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["png", "pdf"], help="default: png pdf")
    p.add_argument("--dpi", type=int, default=300, help="raster resolution (default 300)")
    args = p.parse_args(argv)
    return guarded("figures.py", run, args)


if __name__ == "__main__":
    raise SystemExit(main())
