"""Natural photos that ship inside scikit-image's wheel: a reference set that needs no download.

Feature visualizations are judged against natural images (does the optimized image excite its
unit more than any photo does?); on machines without datasets these 15 photos are the natural
images at hand: people, animals, objects, scenes, micrographs and textures (grass, gravel, brick).
Grey photos are repeated over three channels. `python -m sweep.data.photos OUT` writes them as PNGs.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

#: skimage.data loaders whose files are in the wheel itself (no pooch download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "coins", "moon", "grass", "gravel", "brick", "motorcycle_left", "motorcycle_right")


def _load(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _disparity = skimage.data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def photos() -> dict[str, np.ndarray]:
    """{name: (H, W, 3) uint8}, read-only arrays decoded once per process (every render's measures
    use them: 0.5 s a decode); needs scikit-image (`pip install 'sweep[demo]'`)."""
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        from sweep.core.errors import SweepError

        raise SweepError("the natural photos come from scikit-image: pip install 'sweep[demo]' "
                         "(or pip install scikit-image)")
    return dict(_decoded())


@functools.lru_cache(maxsize=1)
def _decoded() -> tuple[tuple[str, np.ndarray], ...]:
    out = []
    for name in PHOTOS:
        image = _load(name)
        image.setflags(write=False)  # shared by every caller: nobody may change them
        out.append((name, image))
    return tuple(out)


def photo_crops(grid: int = 3) -> dict[str, np.ndarray]:
    """The photos and their crops, a probe set that needs no download: each whole photo, and the
    grid x grid overlapping square crops of half its short side ("<name>-crop<i>"), 150 images in all
    at grid 3. More images than photos is what a correlation across images needs; crops keep them
    natural."""
    out = {}
    for name, image in photos().items():
        out[name] = image
        h, w = image.shape[:2]
        side = min(h, w) // 2
        for i in range(grid * grid):
            y = round((h - side) * (i // grid) / max(grid - 1, 1))
            x = round((w - side) * (i % grid) / max(grid - 1, 1))
            out[f"{name}-crop{i}"] = image[y:y + side, x:x + side]
    return out


def write_photos(folder: str | Path) -> list[Path]:
    """The photos as PNG files in `folder` (a reference folder for `sweep tune --reference`)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in photos().items():
        paths.append(folder / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.data.photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write the photos into (PNG, one per photo)")
    args = parser.parse_args(argv)
    for path in write_photos(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
