"""The same unit across models: cross-model unit matching ("Rosetta neurons", Dravid et al., ICCV 2023).

Every model reads the same probe images; a unit's profile is its activation per image, at the
model's site, averaged over the patch tokens (the paper's objective, what the top-images job ranks
by). Two units of two models match as well as their profiles correlate (Pearson, so a unit's scale
and offset do not matter and units of different depths, widths and architectures compare). Per unit
we keep its k best units in each other model, over all of that model's layers, and mark a pair of
units that are each other's best match as *mutual*; a **Rosetta set** is a group of units that are
mutual best matches across at least m models.

Why profiles on storage, not in memory: 47 models x 50,000 images x ~37,000 units of a ViT-B is
~70 GB per model, and every unit meets every unit of every other model. So each model is scanned
once, its profiles written in shards of `chunk` images per layer (`_profiles/` in the root, a cache
the job re-reads); then one task per model pair streams the two models' shards, one layer pair at a
time, into running sums (`PairSums`, float64, the size of one layer pair's units x units) from which
every Pearson correlation of the layer pair follows, and folds them into each unit's running top-k
(`TopK`, ties to the earlier unit). Memory: one layer pair's sums, never a model's profiles or a
model pair's full correlation matrix; time: images x units_a x units_b per pair, the work itself.

Pure torch and files; no Ray here (`sweep.pipelines.matching` runs it).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from dataclasses import field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from sweep.core.errors import SweepError
from sweep.core.validation import Count, Layer, Positive, Text, config_dataclass
from sweep.experiments.labels import inverse_std, variance
from sweep.experiments.topk import TopK
from sweep.models.build import Weights
from sweep.store.outputs import atomic_write

METHOD = "profile-pearson"
#: The profiles' file format (shards, done.json, moments.npy with mean, std and max): part of their key,
#: so a cache of an older format is scanned again rather than misread.
PROFILE_FORMAT = 2


@config_dataclass
class MatchConfig:
    """Which models' units to match, on which probe images (named by `probe` in the output, hashed
    by their listing), how many matches to keep per unit and other model."""

    models: tuple[Text, ...]
    out: Text
    weights: tuple[Weights, ...] = ("pretrained",)  # one for every model, or one per model in order
    probe: Text = "probe"
    k: Count = 5
    layers: tuple[Layer, ...] | None = None  # block indices (or names) read in every model; default all
    site: Text | None = None  # default: each model's own (its paper site)
    chunk: Count = 1024  # images per profile shard
    batch_size: Count = 32
    actors: Count | None = None
    actor_cpus: Positive = 0.5
    pair_cpus: Positive = 1.0
    pair_memory_gb: Positive = 2.0  # a pair task's units x units arrays (sums and correlations) at most, about
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def weights_of(self, i: int) -> str:
        return self.weights[0] if len(self.weights) == 1 else self.weights[i]


def probe_hash(records: Iterable[dict]) -> str:
    """Identifies the probe set: its images' ids and paths in order (a changed set gives a new hash, and
    the matching is made again rather than mixed)."""
    blob = json.dumps([[str(r["image_id"]), str(r["path"])] for r in records])
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def profile_key(probe: str, weights: str, site: str, layers: list[int], chunk: int, method: str = METHOD) -> str:
    """Names one model's profiles: everything they depend on besides the model."""
    blob = json.dumps({"probe": probe, "weights": weights, "site": site, "layers": layers, "chunk": chunk,
                       "method": method, "format": PROFILE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pair_key(a: dict, b: dict, k: int) -> str:
    """Names one model pair's matches: both models' profile keys (probe, weights, site, layers) and k."""
    blob = json.dumps({"a": [a["model"], a["key"]], "b": [b["model"], b["key"]], "k": k}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- profiles: one model's activations per probe image, in shards -------------------------------------


def shard_name(layer: int, chunk: int) -> str:
    return f"layer-{layer}-{chunk:05d}.npy"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class ProfileWriter:
    """Folds a scanner's batches (image index, per-unit activations of every layer concatenated) into
    shards of `chunk` images per layer, written as .npy under `folder` as soon as each is complete:
    whatever order the batches come in, shard j holds images j*chunk .. (j+1)*chunk-1 of the listing
    (an unreadable image is a row of NaN). `finish` writes `done.json` last, what the pairs check."""

    def __init__(self, fs, folder: str, total: int, layers: list[int], widths: list[int], chunk: int):
        self.fs, self.folder, self.total, self.chunk = fs, folder, total, chunk
        self.layers, self.widths = layers, widths
        self.pending: dict[int, dict[int, np.ndarray]] = {}
        self.written = 0
        self.sum = np.zeros(sum(widths))
        self.sum2 = np.zeros(sum(widths))
        self.max = np.full(sum(widths), -np.inf)
        self.readable = 0

    def rows_in(self, j: int) -> int:
        return min(self.chunk, self.total - j * self.chunk)

    def add(self, index: np.ndarray, acts: np.ndarray) -> None:
        ok = ~np.isnan(acts).any(axis=1)
        self.readable += int(ok.sum())
        self.sum += acts[ok].astype(np.float64).sum(0)
        self.sum2 += (acts[ok].astype(np.float64) ** 2).sum(0)
        if ok.any():
            self.max = np.maximum(self.max, acts[ok].max(0))
        for i, row in zip(index.tolist(), acts):
            j = i // self.chunk
            self.pending.setdefault(j, {})[i] = row
            if len(self.pending[j]) == self.rows_in(j):
                self._write(j, self.pending.pop(j))

    def _write(self, j: int, rows: dict[int, np.ndarray]) -> None:
        block = np.stack([rows[i] for i in sorted(rows)]).astype(np.float32)
        start = 0
        for layer, width in zip(self.layers, self.widths):
            atomic_write(self.fs, posixpath.join(self.folder, shard_name(layer, j)), npy_bytes(block[:, start:start + width]))
            start += width
        self.written += 1

    def finish(self, meta: dict) -> dict:
        if self.pending:
            raise SweepError(f"profiles: shard(s) {sorted(self.pending)} incomplete (images missing from the scan)")
        shards = -(-self.total // self.chunk)
        if self.written != shards:
            raise SweepError(f"profiles: wrote {self.written} of {shards} shard(s)")
        done = {**meta, "layers": self.layers, "widths": self.widths, "chunk": self.chunk, "images": self.total,
                "shards": shards, "readable": self.readable}
        n = max(self.readable, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sum2 / n - mean ** 2, 0))
        top = np.where(np.isfinite(self.max), self.max, 0.0)
        atomic_write(self.fs, posixpath.join(self.folder, "moments.npy"), npy_bytes(np.stack([mean, std, top])))
        atomic_write(self.fs, posixpath.join(self.folder, "done.json"), json.dumps(done, sort_keys=True).encode())
        return done


def read_done(fs, folder: str) -> dict | None:
    """A model's finished profiles' description, or None when they are not all there."""
    path = posixpath.join(folder, "done.json")
    if not fs.exists(path):
        return None
    try:
        done = json.loads(fs.cat_file(path))
    except (ValueError, UnicodeDecodeError):
        return None
    return done if isinstance(done, dict) and {"layers", "widths", "chunk", "images", "shards"} <= set(done) else None


def _load_array(fs, path: str, folder: str, what: str) -> np.ndarray:
    """An .npy file of a model's profiles (never pickles); one line naming it when it cannot be read."""
    try:
        return np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SweepError(f"{what} {path}: unreadable ({exc}); delete {folder} to scan again") from None


def unit_stats(fs, folder: str, done: dict) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer, each unit's (mean, std, max) over the readable probe images (the scan's `moments.npy`)."""
    path = posixpath.join(folder, "moments.npy")
    stats = _load_array(fs, path, folder, "profile moments")
    if stats.shape != (3, sum(done["widths"])) or not np.isfinite(stats).all():
        raise SweepError(f"profile moments {path}: not the {sum(done['widths'])} units' means, spreads and maxima; "
                         f"delete {folder} to scan again")
    out, start = {}, 0
    for layer, width in zip(done["layers"], done["widths"]):
        out[layer] = tuple(stats[:, start:start + width])
        start += width
    return out


def moments(fs, folder: str, done: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per layer, (mean, 1/std) of each unit over the readable probe images (1 where the std is 0):
    what `PairSums` standardizes with."""
    return {layer: (mean, np.where(std > 0, 1 / np.where(std > 0, std, 1), 1.0))
            for layer, (mean, std, _) in unit_stats(fs, folder, done).items()}


def shards(fs, folder: str, done: dict, layers: list[int]) -> Iterator[np.ndarray]:
    """The profiles of `layers` side by side, a shard at a time (float32 (rows, their widths)), each
    file checked against `done`."""
    for j in range(done["shards"]):
        rows = min(done["chunk"], done["images"] - j * done["chunk"])
        parts = []
        for layer in layers:
            width = done["widths"][done["layers"].index(layer)]
            path = posixpath.join(folder, shard_name(layer, j))
            array = _load_array(fs, path, folder, "profile shard")
            if array.shape != (rows, width) or array.dtype != np.float32:
                raise SweepError(f"profile shard {path}: {array.dtype} {array.shape}, expected float32 {(rows, width)}; "
                                 f"delete {folder} to scan again")
            parts.append(array)
        yield np.concatenate(parts, axis=1)


# --- the statistics ---------------------------------------------------------------------------------


class PairSums:
    """Running sums over images of two sets of unit profiles, a (B, Ua) and b (B, Ub), enough for every
    (unit of a, unit of b) Pearson correlation. An image missing (NaN) in either is left out of both.

    Precision: per-unit sums are float64; the cross products are float32 (a GPU's fast path: float64
    runs at 1/32 to 1/64 of it on the L4/A10G class; and half the memory of the units x units array).
    Give each side's `center` (per-unit means) and `scale` (1/std), the profile scan's (`moments`),
    so the products are of standardized values, each about 1: then the float32 error is ~1e-6 of a
    correlation after 50,000 images, and Pearson does not care about the affine change."""

    def __init__(self, units_a: int, units_b: int, device: torch.device | str = "cpu",
                 center_a=None, scale_a=None, center_b=None, scale_b=None):
        self.n = 0
        f64 = dict(dtype=torch.float64, device=device)
        self.sum_a, self.sum_a2 = torch.zeros(units_a, **f64), torch.zeros(units_a, **f64)
        self.sum_b, self.sum_b2 = torch.zeros(units_b, **f64), torch.zeros(units_b, **f64)
        f32 = dict(dtype=torch.float32, device=device)
        self.sum_ab = torch.zeros(units_a, units_b, **f32)
        self.affine = [(torch.as_tensor(c, **f32) if c is not None else None, torch.as_tensor(s, **f32) if s is not None else None)
                       for c, s in ((center_a, scale_a), (center_b, scale_b))]

    def _standard(self, x, side: int) -> torch.Tensor:
        x = torch.as_tensor(x).to(self.sum_ab.device, torch.float32)
        center, scale = self.affine[side]
        if center is not None:
            x = x - center
        if scale is not None:
            x = x * scale
        return x

    def update(self, a, b) -> "PairSums":
        a, b = self._standard(a, 0), self._standard(b, 1)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"{a.shape[0]} images of one model's profile but {b.shape[0]} of the other's")
        ok = ~(torch.isnan(a).any(1) | torch.isnan(b).any(1))
        a, b = a[ok], b[ok]
        self.n += a.shape[0]
        a64, b64 = a.double(), b.double()
        self.sum_a += a64.sum(0)
        self.sum_a2 += (a64 * a64).sum(0)
        self.sum_b += b64.sum(0)
        self.sum_b2 += (b64 * b64).sum(0)
        self.sum_ab.addmm_(a.T, b)
        return self

    def live(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Which units vary over the images (a constant unit matches nothing)."""
        n = max(self.n, 1)
        return (variance(self.sum_a2 / n, self.sum_a / n) > 0), (variance(self.sum_b2 / n, self.sum_b / n) > 0)

    def correlation(self) -> torch.Tensor:
        """(Ua, Ub) float32 Pearson correlations; 0 where either unit is constant over the images. One
        new units x units array (the sums' size again), changed in place."""
        n = max(self.n, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        scale_a = inverse_std(variance(self.sum_a2 / n, mean_a)).float()
        scale_b = inverse_std(variance(self.sum_b2 / n, mean_b)).float()
        cov = (self.sum_ab / n).addr_(mean_a.float(), mean_b.float(), alpha=-1)
        return cov.mul_(scale_a[:, None]).mul_(scale_b[None, :]).clamp_(-1, 1)


def layer_groups(widths_a: list[int], units_b: int, budget_bytes: float) -> list[list[int]]:
    """Consecutive runs of model a's layers (indices into widths_a) whose sums with all of model b's
    units fit the budget (a float32 units x units array, and the correlations made from it: 8 bytes
    a pair); a layer bigger than the budget on its own is a group of one."""
    groups, current, size = [], [], 0
    for i, width in enumerate(widths_a):
        if current and (size + width) * units_b * 8 > budget_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += width
    return groups + ([current] if current else [])


def _joined(moments: dict | None, layers: list[int]):
    if not moments:
        return None, None
    return (np.concatenate([moments[layer][0] for layer in layers]),
            np.concatenate([moments[layer][1] for layer in layers]))


def match_pair(read_a: Callable[[list[int]], Iterable], layers_a: list[int], widths_a: list[int],
               read_b: Callable[[list[int]], Iterable], layers_b: list[int], widths_b: list[int], k: int,
               device: torch.device | str = "cpu", moments_a: dict | None = None, moments_b: dict | None = None,
               budget_bytes: float = 2e9, progress: Callable[[], None] | None = None, checkpoint=None):
    """Every unit's k best units of the other model, both ways.

    `read_x(layers)` yields, shard by shard (the same images in the same order for both models), the
    profiles of those layers side by side; `moments_x[layer]` its units' (mean, 1/std), as `moments`
    reads them (None: raw values, fine for small profiles). Model a's layers go in groups that fit
    `budget_bytes` against all of b's units (`layer_groups`): each group is one pass over the shards,
    so b's profile is read once per group, a's once in all. `checkpoint` (`GroupCheckpoint`) keeps each
    group's result as it is made and gives back those already made: an interrupted pair resumes at
    the group (layer pair) it stopped in.

    Returns (top_a, top_b, n): top_a[la] a `TopK` over la's units whose ids index the other model's
    units in (layer, feature) order (`unit_index`), top_b likewise; n the images used."""
    offset_a = np.concatenate([[0], np.cumsum(widths_a)]).astype(int).tolist()
    offset_b = np.concatenate([[0], np.cumsum(widths_b)]).astype(int).tolist()
    units_b = offset_b[-1]
    top_a = {la: TopK(w, k) for la, w in zip(layers_a, widths_a)}
    top_b = {lb: TopK(w, k) for lb, w in zip(layers_b, widths_b)}
    live_a: dict[int, torch.Tensor] = {}
    live_b = torch.zeros(units_b, dtype=torch.bool)
    cb, sb = _joined(moments_b, layers_b)
    n = 0
    for group in layer_groups(widths_a, units_b, budget_bytes):
        mine = [layers_a[i] for i in group]
        done = checkpoint.load(mine) if checkpoint is not None else None
        if done is None:
            done = _match_group(read_a, read_b, group, layers_a, widths_a, layers_b, offset_a, offset_b, k, device,
                                _joined(moments_a, mine), (cb, sb))
            if checkpoint is not None:
                checkpoint.save(mine, done)
        group_a, group_b, alive_a, alive_b, n = done
        live_b |= alive_b
        row = 0
        for i in group:
            la, wa = layers_a[i], widths_a[i]
            live_a[la] = alive_a[row:row + wa]
            top_a[la] = group_a[la]  # a's units meet all of b's in their group: their top-k is final
            row += wa
        for lb in layers_b:
            top_b[lb] = top_b[lb].merge(group_b[lb])
        if progress is not None:
            progress()
    for top, live in ((top_a, live_a), (top_b, {lb: live_b[offset_b[j]:offset_b[j + 1]]
                                                 for j, lb in enumerate(layers_b)})):
        for layer, t in top.items():  # a constant query unit keeps no matches
            t.ids[~live[layer]] = -1
            t.ids[torch.isinf(t.values)] = -1
    return top_a, top_b, n


def _match_group(read_a, read_b, group, layers_a, widths_a, layers_b, offset_a, offset_b, k, device, moments_a,
                 moments_b):
    """One group of a's layers against all of b: (its units' TopK per layer, b's units' TopK per layer
    over this group's units only, a's and b's live masks, images used)."""
    mine = [layers_a[i] for i in group]
    units_b = offset_b[-1]
    sums = PairSums(sum(widths_a[i] for i in group), units_b, device, *moments_a, *moments_b)
    for a, b in zip(read_a(mine), read_b(list(layers_b)), strict=True):
        sums.update(a, b)
    n = sums.n
    corr = sums.correlation().cpu()
    alive_a, alive_b = (t.cpu() for t in sums.live())
    del sums
    corr[~alive_a, :] = float("-inf")  # a constant unit is nobody's match: -inf never enters a top-k
    corr[:, ~alive_b] = float("-inf")
    # each unit's best k of this group first (torch.topk, linear in the candidates), then merged into
    # its running top-k: a full sort of every units x units block would cost as much as the sums
    group_a, row = {}, 0
    for i in group:
        values, index = torch.topk(corr[row:row + widths_a[i]], min(k, units_b), dim=1)
        group_a[layers_a[i]] = TopK(widths_a[i], k).offer(values, index)
        row += widths_a[i]
    group_b, first = {}, offset_a[group[0]]
    for j, lb in enumerate(layers_b):
        values, index = torch.topk(corr[:, offset_b[j]:offset_b[j + 1]], min(k, corr.shape[0]), dim=0)
        group_b[lb] = TopK(offset_b[j + 1] - offset_b[j], k).offer(values.T, index.T + first)
    return group_a, group_b, alive_a, alive_b, n


class GroupCheckpoint:
    """Each finished group of a model pair as one .npz file under `folder` (named by the pair's key and
    the group's layers), so a pair task that dies resumes at the group it was in; `clear` removes them
    once the pair's part is written."""

    def __init__(self, fs, folder: str, key: str):
        self.fs, self.folder, self.key = fs, folder, key

    def path(self, layers: list[int]) -> str:
        return posixpath.join(self.folder, f"{self.key}-{'_'.join(map(str, layers))}.npz")

    def save(self, layers: list[int], done) -> None:
        group_a, group_b, alive_a, alive_b, n = done
        arrays = {"alive_a": alive_a.numpy(), "alive_b": alive_b.numpy(), "n": np.array(n)}
        for side, tops in (("a", group_a), ("b", group_b)):
            for layer, t in tops.items():
                arrays[f"{side}{layer}_values"], arrays[f"{side}{layer}_ids"] = t.values.numpy(), t.ids.numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(self.fs, self.path(layers), buf.getvalue())

    def load(self, layers: list[int]):
        path = self.path(layers)
        if not self.fs.exists(path):
            return None
        try:
            got = np.load(io.BytesIO(self.fs.cat_file(path)), allow_pickle=False)
            tops: dict = {"a": {}, "b": {}}
            for name in got.files:
                if name.endswith("_values"):
                    side, layer = name[0], int(name[1:-len("_values")])
                    t = TopK(got[name].shape[0], got[name].shape[1])
                    t.values, t.ids = torch.from_numpy(got[name]), torch.from_numpy(got[f"{name[:-7]}_ids"])
                    tops[side][layer] = t
            return (tops["a"], tops["b"], torch.from_numpy(got["alive_a"]), torch.from_numpy(got["alive_b"]),
                    int(got["n"]))
        except (OSError, ValueError, KeyError):
            return None  # damaged: made again

    def clear(self) -> None:
        for path in self.fs.glob(posixpath.join(self.folder, f"{self.key}-*.npz")):
            self.fs.rm(path)


def unit_index(layers: list[int], widths: list[int]) -> list[tuple[int, int]]:
    """(layer, feature) of each unit in the order `match_pair`'s ids count them."""
    return [(layer, f) for layer, w in zip(layers, widths) for f in range(w)]


def match_rows(query: dict, other: dict, top: dict[int, TopK], k: int) -> pd.DataFrame:
    """The rows of one direction: each unit of `query` with its ranked matches in `other`. `query` and
    `other` describe a model: model, site, weights, layers, widths."""
    units = unit_index(other["layers"], other["widths"])
    frames = []
    for layer, t in top.items():
        valid = t.ids >= 0
        u, r = torch.nonzero(valid, as_tuple=True)
        ids = t.ids[u, r].tolist()
        frames.append(pd.DataFrame({
            "model_a": query["model"], "layer_a": np.int32(layer), "site_a": query["site"],
            "unit_a": u.numpy().astype(np.int32), "model_b": other["model"],
            "layer_b": np.array([units[i][0] for i in ids], np.int32), "site_b": other["site"],
            "unit_b": np.array([units[i][1] for i in ids], np.int32),
            "score": t.values[u, r].numpy().astype(np.float32), "rank": r.numpy().astype(np.int32)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def mark_mutual(rows: pd.DataFrame) -> pd.DataFrame:
    """`mutual`: a rank-0 row whose unit_b's own best match (in model_a) is unit_a."""
    best = rows[rows["rank"] == 0]
    keys = set(zip(best["model_a"], best["layer_a"], best["unit_a"], best["model_b"], best["layer_b"], best["unit_b"]))
    twin = list(zip(rows["model_b"], rows["layer_b"], rows["unit_b"], rows["model_a"], rows["layer_a"], rows["unit_a"]))
    rows["mutual"] = (rows["rank"] == 0).to_numpy() & np.array([t in keys for t in twin], bool)
    return rows


def rosetta_sets(matches: pd.DataFrame, min_models: int = 3) -> pd.DataFrame:
    """Groups of units linked by mutual best matches (connected components of the mutual-match graph,
    one unit per model at most), spanning at least `min_models` models; ranked by how many models they
    span, then by their weakest link. One row per (set, unit): set, models, score_min, score_mean,
    model, layer, site, unit."""
    mutual = matches[matches["mutual"]]
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges = []
    for r in mutual.itertuples(index=False):
        a, b = (r.model_a, int(r.layer_a), r.site_a, int(r.unit_a)), (r.model_b, int(r.layer_b), r.site_b, int(r.unit_b))
        parent[find(a)] = find(b)
        edges.append((a, float(r.score)))
    groups: dict = {}
    for unit in list(parent):
        groups.setdefault(find(unit), set()).add(unit)
    scores: dict = {}
    for a, s in edges:
        scores.setdefault(find(a), []).append(s)
    sets = []
    for root, members in groups.items():
        models = {m[0] for m in members}
        if len(models) < min_models or len(models) != len(members):  # two units of one model: not a Rosetta set
            continue
        sets.append((len(models), min(scores[root]), float(np.mean(scores[root])), sorted(members)))
    sets.sort(key=lambda s: (-s[0], -s[1], s[3]))
    rows = [{"set": i, "models": n, "score_min": lo, "score_mean": mean, "model": m, "layer": layer, "site": site,
             "unit": unit} for i, (n, lo, mean, members) in enumerate(sets) for m, layer, site, unit in members]
    return pd.DataFrame(rows, columns=["set", "models", "score_min", "score_mean", "model", "layer", "site", "unit"])


#: The probe photos' short side at most, in pixels (larger ones are scaled down when written).
PROBE_SIDE = 448


def photo_probe(fs, root: str) -> list[dict]:
    """The shipped photos and their crops (`sweep.data.photos.photo_crops`) as probe images, each at
    most PROBE_SIDE on its short side: written once into the root (`_probes/set=photos/`, so workers on
    any machine read them) and listed as records like an image folder's."""
    from PIL import Image

    from sweep.data.photos import photo_crops
    from sweep.store.layout import PROBES
    from sweep.data.imagenet import url_of

    records = []
    for name, image in sorted(photo_crops().items()):
        rel = PROBES.part(f"{name}.png", set="photos")
        path = posixpath.join(root, rel)
        if not fs.exists(path):
            picture = Image.fromarray(image)
            scale = PROBE_SIDE / min(picture.size)
            if scale < 1:  # every model reads 224 to 518 px: larger files only cost decoding
                picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                         Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            picture.save(buf, format="PNG", compress_level=1)
            atomic_write(fs, path, buf.getvalue())
        records.append({"image_id": f"photos/{name}", "path": url_of(fs, path), "wnid": "",
                        "label": -1, "boxes": [], "box_error": ""})
    return records


def matching_cost(models: list[dict], images: int, k: int, chunk: int, budget_bytes: float) -> dict:
    """What a matching of `models` (as `check_matching` describes them, with `flops`: one image's
    forward FLOPs to its last layer) over `images` probe images costs, by the job's own arithmetic:
    scan FLOPs (one forward per image and model), pair FLOPs (2 x images x units_a x units_b per pair),
    profile bytes (float32), bytes the pair tasks read (b's profile once per layer group of a, a's
    once), the largest pair task's arrays, and the rows written (k per unit, other model)."""
    units = [sum(m["widths"]) for m in models]
    pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    pair_flop = sum(2.0 * images * units[i] * units[j] for i, j in pairs)
    reads, peak = 0.0, 0.0
    for i, j in pairs:
        groups = layer_groups(models[i]["widths"], units[j], budget_bytes)
        reads += 4.0 * images * (units[i] + len(groups) * units[j])
        biggest = max(sum(models[i]["widths"][g] for g in group) for group in groups)
        peak = max(peak, 8.0 * biggest * units[j] + 4.0 * chunk * (biggest + units[j]))
    return {"models": len(models), "units": sum(units), "pairs": len(pairs), "images": images,
            "scan_tflop": sum(m["flops"] for m in models) * images / 1e12, "pair_tflop": pair_flop / 1e12,
            "profile_bytes": 4.0 * images * sum(units), "pair_read_bytes": reads, "pair_peak_bytes": peak,
            "rows": sum(k * (units[i] + units[j]) for i, j in pairs)}
