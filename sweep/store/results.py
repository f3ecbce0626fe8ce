"""Read a results root's datasets: `Results` (pandas queries by partition) and the readers of damaged-proof
Parquet under it. What the sweep resumes from, the feature index, is `sweep.store.index`."""

from __future__ import annotations

import errno
import logging
import posixpath

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.core.errors import SweepError, one_line, storage_error
from sweep.store.layout import DATASETS

log = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
READ_ERRORS = (OSError, pa.ArrowException)


def _arrow_fs(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def hidden(base: str, path: str) -> bool:
    """Whether a file under a dataset folder is one readers skip: a dot or underscore name at any
    depth (temporary files, summaries, set-aside damaged files), as pyarrow's discovery does."""
    return any(c.startswith((".", "_")) for c in path[len(base):].strip("/").split("/"))


def data_files(fs: fsspec.AbstractFileSystem, base: str) -> list[str]:
    """Parquet files of a hive dataset folder, without the `hidden` ones."""
    fs.invalidate_cache(base)  # parts are written by other processes: never trust an old listing
    return sorted(p for p in fs.find(base) if not hidden(base, p))


def magic_problem(head: bytes, tail: bytes) -> str | None:
    """Why a Parquet file whose first and last 4 bytes these are is damaged, or None: a complete one
    starts and ends with PAR1; a truncated or empty one does not."""
    if head == PARQUET_MAGIC and tail == PARQUET_MAGIC:
        return None
    return "empty" if not head else "truncated or not Parquet (no PAR1 magic at both ends)"


def byte_ranges(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int],
                ends: list[int | None]) -> list[bytes | None]:
    """Byte ranges of many files in one batch (concurrent on object stores): None for a file that is
    gone, b"" for an empty one. Any other error (network, access) is raised in one line, so a flaky
    store never makes good results look damaged."""
    got = fs.cat_ranges(paths, starts, ends, on_error="return") if paths else []
    out: list[bytes | None] = []
    for path, data in zip(paths, got):
        if isinstance(data, FileNotFoundError):
            data = None
        elif isinstance(data, OSError) and data.errno == errno.EINVAL:  # S3's 416: a range of an empty object
            data = b""
        elif isinstance(data, BaseException):
            raise SweepError(storage_error(data, path)) from None
        out.append(data)
    return out


def split_damaged(fs: fsspec.AbstractFileSystem, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    """Readable-looking Parquet files, and damaged ones with the reason; files gone since the listing
    are in neither.

    Cheap first test: a Parquet file starts and ends with PAR1; a truncated or empty one does not.
    Both ends of every file come in one batch of ranged reads.
    """
    n = len(paths)
    ends = byte_ranges(fs, paths + paths, [0] * n + [-4] * n, [4] * n + [None] * n)
    good, damaged = [], {}
    for path, head, tail in zip(paths, ends[:n], ends[n:]):
        if head is None or tail is None:
            continue
        problem = magic_problem(head, tail)
        if problem:
            damaged[path] = problem
        else:
            good.append(path)
    return good, damaged


def footer_damaged(fs: fsspec.AbstractFileSystem, paths: list[str]) -> dict[str, str]:
    """Files whose Parquet footer cannot be parsed (the slower, second test), with the reason."""
    damaged = {}
    for path in paths:
        try:
            pq.read_metadata(path, filesystem=_arrow_fs(fs))
        except READ_ERRORS as exc:
            damaged[path] = one_line(exc, 120)
    return damaged


def warn_damaged(root: str, damaged: dict[str, str]) -> None:
    """One warning line for all damaged files of a read (the first few named)."""
    if not damaged:
        return
    named = "; ".join(f"{p}: {why}" for p, why in list(damaged.items())[:5])
    more = f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    log.warning("skipping %d damaged or foreign Parquet file(s) under %s (their results count as missing): %s%s",
                len(damaged), root, named, more)


def hive_dataset(fs: fsspec.AbstractFileSystem, path: str, files: list[str],
                 schema: pa.Schema | None = None) -> ds.Dataset:
    """A hive-partitioned Parquet dataset of these files (under `path`) on any fsspec filesystem.
    With `schema` (the layout's) every file is read in it, as `fit_schema` reads one table: older
    parts without a newer column give nulls, extra columns are left out, and a column whose values
    cannot be the layout's type fails the read (`misfits` then names the file)."""
    found = ds.dataset(files, filesystem=_arrow_fs(fs), format="parquet",
                       partitioning=ds.HivePartitioning.discover(), partition_base_dir=path)
    if schema is None:
        return found
    target = pa.schema([*schema, *(f for f in found.partitioning.schema if f.name not in schema.names)])
    return ds.dataset(files, schema=target, filesystem=_arrow_fs(fs), format="parquet",
                      partitioning=found.partitioning, partition_base_dir=path)


def fit_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in the layout's `schema`, the rule `hive_dataset` reads by: each column cast to the
    layout's type, a missing one null, others left out. ValueError names a column that cannot be cast
    (a foreign or hostile part), so every reader of a root skips the same files for the columns it
    reads (`Results` asked for some columns reads only those: a part bad in another still gives them)."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table[field.name]
        try:
            columns.append(column.cast(field.type))
        except pa.ArrowException as exc:
            raise ValueError(f"column {field.name!r} is {column.type}, not {field.type} ({one_line(exc, 80)})") from None
    return pa.Table.from_arrays(columns, schema=schema)


def misfits(fs: fsspec.AbstractFileSystem, path: str, dataset: ds.Dataset, files: list[str]) -> dict[str, str]:
    """Files of `dataset` that cannot be read in its schema (a column of another type: a foreign or
    hostile part), with the reason; read one by one, only after a read of them all failed."""
    bad = {}
    for file in files:
        try:
            ds.dataset([file], schema=dataset.schema, filesystem=_arrow_fs(fs), format="parquet",
                       partitioning=dataset.partitioning, partition_base_dir=path).to_table()
        except READ_ERRORS as exc:
            bad[file] = f"not this dataset's columns ({one_line(exc, 120)})"
    return bad


def readable_dataset(fs: fsspec.AbstractFileSystem, path: str,
                     schema: pa.Schema | None = None) -> tuple[ds.Dataset | None, dict[str, str]]:
    """The dataset of the readable files under `path` (None when there are none), read in the layout's
    `schema` when given, and the damaged files left out, with their reasons; so one truncated part
    never blocks a read."""
    good, damaged = split_damaged(fs, data_files(fs, path))
    try:
        dataset = hive_dataset(fs, path, good, schema) if good else None
    except READ_ERRORS:  # a footer that the magic test let through: find it file by file
        bad = footer_damaged(fs, good)
        damaged.update(bad)
        good = [p for p in good if p not in bad]
        dataset = hive_dataset(fs, path, good, schema) if good else None
    return dataset, damaged


class Results:
    """Query a results root with pandas: each dataset is read with partition filters, so asking for
    one model (or experiment, or split) opens only that partition's files.

        r = Results("s3://bucket/atlas", storage_options={...})
        r.models()                                   # from the partition folders, no file is read
        r.features(model="B_16_imagenet1k", columns=["layer", "feature", "act_final"])
        r.ablations("foreground_background", model="ResNet-50")
    """

    #: The datasets read here, with their partition keys (sweep.store.layout).
    DATASETS = {name: DATASETS[name].keys
                for name in ("features", "ablations", "top_images", "invariance", "labels", "tuning", "matches", "transfer")}

    def __init__(self, root: str, storage_options: dict | None = None,
                 filesystem: fsspec.AbstractFileSystem | None = None):
        from sweep.store.outputs import open_root

        if filesystem is None:
            self.fs, self.root = open_root(root, storage_options)
        else:
            self.fs, self.root = filesystem, root.rstrip("/")

    def _read(self, name: str, filters: dict, columns: list[str] | None) -> pd.DataFrame:
        path = posixpath.join(self.root, name)
        if not self.fs.exists(path):
            raise SweepError(f"no {name} under {self.root!r}")
        if filters.get("model") is not None:
            filters = {**filters, "model": self._key(filters["model"])}
        # Leading partition keys that are given narrow the path itself: other partitions are never listed.
        fixed = {}
        for key in self.DATASETS[name]:
            if filters.get(key) is None:
                break
            fixed[key] = filters[key]
        path = posixpath.join(self.root, DATASETS[name].folder(**fixed))
        if not self.fs.exists(path):
            return pd.DataFrame(columns=[*fixed, *(columns or [])])
        dataset, damaged = readable_dataset(self.fs, path, DATASETS[name].schema)
        if dataset is None:
            warn_damaged(self.root, damaged)
            return pd.DataFrame(columns=[*fixed, *(columns or [])])
        expr = None
        for key, value in filters.items():
            if value is None or key in fixed:
                continue
            if key not in dataset.schema.names:
                raise SweepError(f"{name} has no column {key!r}; columns: {', '.join(dataset.schema.names)}")
            term = ds.field(key) == value
            expr = term if expr is None else expr & term
        own = [c for c in columns if c not in fixed] if columns is not None else None
        try:
            table = dataset.to_table(columns=own, filter=expr)
        except READ_ERRORS:  # a file damaged inside, or of other columns: find it, read the others
            files = list(dataset.files)
            damaged.update(footer_damaged(self.fs, files))
            kept = [f for f in files if f not in damaged]
            damaged.update(misfits(self.fs, path, dataset, kept))
            kept = [f for f in kept if f not in damaged]
            table = (hive_dataset(self.fs, path, kept, DATASETS[name].schema).to_table(columns=own, filter=expr)
                     if kept else dataset.schema.empty_table().select(own or dataset.schema.names))
        warn_damaged(self.root, damaged)
        frame = table.to_pandas()
        for key, value in fixed.items():
            if columns is None or key in columns:
                frame.insert(0, key, value)
        if columns is not None:
            frame = frame[list(columns)]
        for key in self.DATASETS[name]:
            if key in frame and isinstance(frame[key].dtype, pd.CategoricalDtype):
                frame[key] = frame[key].astype(str)
        return frame

    def models(self, dataset: str = "features") -> list[str]:
        """Models present in a dataset, read from its partition folder names only."""
        if dataset not in DATASETS or "model" not in DATASETS[dataset].keys:
            raise SweepError(f"unknown dataset {dataset!r}; allowed: "
                             f"{', '.join(n for n, d in DATASETS.items() if 'model' in d.keys)}")
        return DATASETS[dataset].values(self.fs, self.root, "model")

    def features(self, model: str | None = None, layer: int | None = None, site: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("features", {"model": model, "layer": layer, "site": site}, columns)

    def ablations(self, experiment: str | None = None, model: str | None = None,
                  columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("ablations", {"experiment": experiment, "model": model}, columns)

    def top_images(self, split: str | None = None, model: str | None = None, layer: int | None = None,
                   columns: list[str] | None = None) -> pd.DataFrame:
        return self._read("top_images", {"split": split, "model": model, "layer": layer}, columns)

    def invariance(self, split: str | None = None, model: str | None = None) -> pd.DataFrame:
        return self._read("invariance", {"split": split, "model": model}, None)

    def labels(self, model: str | None = None, layer: int | None = None, concept: str | None = None,
               vocabulary_hash: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Concept labels per unit (`jobs/labels.py`): one row per (unit, rank) with the concept, its
        score, the method, the judge and the vocabulary's hash; filter by concept to find its units."""
        return self._read("labels", {"model": model, "layer": layer, "concept": concept,
                                     "vocabulary_hash": vocabulary_hash}, columns)

    def tuning(self, model: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Recipe-tuning trials (`sweep tune`), one row per trial with its (lr, tv) and scores."""
        return self._read("tuning", {"model": model}, columns)

    def matches(self, model: str | None = None, layer: int | None = None, unit: int | None = None,
                other: str | None = None, site: str | None = None, mutual: bool | None = None,
                columns: list[str] | None = None) -> pd.DataFrame:
        """Cross-model unit matches (`jobs/matching.py`): one row per (unit of model_a, rank) with its
        match in model_b (layer_b, unit_b), the Pearson score over the probe images, `mutual` where the
        two are each other's best. model/layer/unit/site select the query unit, other the model matched
        into; mutual=True keeps mutual best matches only."""
        if model is not None:
            model = self._key(model)
        if other is not None:
            other = self._key(other)
        frame = self._read("matches", {"model_a": model, "layer_a": layer, "unit_a": unit, "site_a": site,
                                       "model_b": other, "mutual": mutual}, columns)
        sort = [c for c in ("model_a", "layer_a", "unit_a", "model_b", "rank") if c in frame]
        return frame.sort_values(sort, kind="stable").reset_index(drop=True) if sort else frame

    def transfer(self, model: str | None = None, other: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
        """Each visualization of `model` shown to `other` (`jobs/transfer.py`): its unit's counterpart
        there, the counterpart's activation on the image, z against the counterpart's probe images and
        beats_probe (above all of them)."""
        return self._read("transfer", {"model": model, "other": self._key(other) if other else None}, columns)

    @staticmethod
    def _key(model: str) -> str:
        """A zoo alias as its registry key (the name rows are written under); any other name as given."""
        from sweep.models.zoo import REGISTRY

        return REGISTRY.get(model).key if model in REGISTRY else model

    def quality(self, model: str | None = None, split: str | None = None) -> pd.DataFrame:
        """Every `ok` visualization with its measures (sweep/method/measures.py), `switched_off` (an MLP
        unit whose image leaves its post-GELU mean at or below 0), and, where the top-images job ran
        on the model, `natural_rank`: how many of the unit's stored top natural images beat the
        image (0: it beats every image of the split; `top_k`: none of those stored). See `quality_frame`."""
        feats = self.features(model=model)
        if feats.empty:
            return quality_frame(feats, pd.DataFrame())
        tops = pd.DataFrame()
        splits = DATASETS["top_images"].values(self.fs, self.root, "split")
        if split is None and len(splits) > 1:
            raise SweepError(f"top images of several splits under {self.root!r}: name one with split=; "
                             f"allowed: {', '.join(splits)}")
        if split is not None and split not in splits:
            raise SweepError(f"no top images of split {split!r}; allowed: {', '.join(splits) or 'none'}")
        if splits:
            tops = self.top_images(split=split or splits[0], model=model)
        transfer = pd.DataFrame()
        if self.fs.exists(posixpath.join(self.root, DATASETS["transfer"].name)):
            transfer = self.transfer(model=model)
        return quality_frame(feats, tops, transfer)


def quality_frame(features: pd.DataFrame, tops: pd.DataFrame, transfer: pd.DataFrame | None = None) -> pd.DataFrame:
    """The quality columns of `Results.quality` from feature rows, top-image rows and transfer rows
    (pure pandas). Transferability, where `jobs/transfer.py` showed the images to other models:
    `transfer_z` (the median over them of the counterpart's z), `transfer_beats` (the fraction where
    the counterpart rose above all its probe images), `transfer_models` (how many were scored).

    A visualization is compared with natural images only where both measure the same number: the
    unit objective, not negative, at the site the top images were read at (an `mlp_pre` image by its
    post-GELU value against the `mlp` top images)."""
    out = features[features["status"] == "ok"].copy() if "status" in features else features.copy()
    post = pd.to_numeric(out.get("post_final"), errors="coerce") if "post_final" in out else None
    out["switched_off"] = (post <= 0) if post is not None else False
    out["natural_rank"] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    out["top_k"] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    out = _with_transfer(out, transfer)
    if out.empty or tops.empty:
        return out
    objective = out["objective"].fillna("unit") if "objective" in out else pd.Series("unit", index=out.index)
    negative = out["negative"].fillna(False).astype(bool) if "negative" in out else False
    site = out["site"].where(out["site"] != "mlp_pre", "mlp")
    value = out["act_final"].where(out["site"] != "mlp_pre", post if post is not None else out["act_final"])
    comparable = (objective == "unit") & ~negative
    keys = ["model", "layer", "site", "feature"] if "model" in tops and "model" in out else ["layer", "site", "feature"]
    probe = out.loc[comparable, [k for k in keys if k != "site"]].assign(site=site[comparable],
                                                                          value=value[comparable], row=out.index[comparable])
    merged = probe.merge(tops[[*keys, "activation"]], on=keys, how="inner")
    if merged.empty:
        return out
    ranks = merged.assign(beats=merged["activation"] > merged["value"]).groupby("row").agg(
        natural_rank=("beats", "sum"), top_k=("beats", "size"))
    out.loc[ranks.index, "natural_rank"] = ranks["natural_rank"].astype("Int64")
    out.loc[ranks.index, "top_k"] = ranks["top_k"].astype("Int64")
    return out


def _with_transfer(out: pd.DataFrame, transfer: pd.DataFrame | None) -> pd.DataFrame:
    keys = ["model", "layer", "site", "feature"]
    if transfer is None or transfer.empty or out.empty or not set(keys) <= set(out):
        for c in ("transfer_z", "transfer_beats"):
            out[c] = float("nan")
        out["transfer_models"] = 0
        return out
    scored = transfer[transfer["error"].fillna("") == ""].assign(beats=lambda t: t["beats_probe"].astype(float))
    per = scored.groupby(keys).agg(transfer_z=("z", "median"), transfer_beats=("beats", "mean"),
                                   transfer_models=("other", "nunique")).reset_index()
    merged = out.rename_axis("_row").reset_index().merge(per, on=keys, how="left").set_index("_row")
    merged.index.name = out.index.name
    merged["transfer_models"] = merged["transfer_models"].fillna(0).astype(int)
    return merged
