"""The layout of a results root: every dataset it holds, where, partitioned how, in what shape.

"Where is X written, in what shape" is answered here and nowhere else. Each dataset is a folder
under the root, hive-partitioned (`key=value` folders, values URI-encoded because model keys hold
'/'), read back with pyarrow's hive partitioning; its row schema, where it has rows, is declared
beside it. Writers ask a dataset for a file's path (`part`), readers for its partitions (`keys_of`,
`values`), and `drop` removes a partition; nobody builds or parses `key=value` paths by hand.

    features/model=<m>/part-<hash>.parquet                 FEATURE_SCHEMA, one row per visualized feature
    images/model=<m>/layer=<l>/<site>-<feature>.png          the visualizations
    top_images/split=<s>/model=<m>/part-00000.parquet        TOP_SCHEMA, top-k natural images per unit
    top_image_thumbs/split=<s>/<thumb_name(image id)>        a small picture of each top image
    invariance/split=<s>/model=<m>/part-00000.parquet        per-unit before/after activations
    ablations/experiment=<e>/model=<m>/part-<n>.parquet      ABLATION_SCHEMA, one row per image x condition
    activation_maps/files/model=<m>/layer=<l>/<site>-<f>/<image>.{npy,png}
    activation_maps/table/model=<m>/layer=<l>/part-<site>-<hash>.parquet
    labels/model=<m>/layer=<l>/part-<key>.parquet            LABEL_SCHEMA, the best concepts per unit
    tuning/model=<m>/trial-<key>.parquet                     TRIAL_SCHEMA, one row per (lr, tv) trial
    tuning_images/model=<m>/trial-<key>/...png
    matches/pair=<a>~<b>/part-<key>.parquet                 MATCH_SCHEMA, each unit's best units in the other model
    transfer/model=<m>/other=<o>/part-<key>.parquet          TRANSFER_SCHEMA, m's visualizations shown to o
    _profiles/model=<m>/key=<key>/layer-<l>-<j>.npy, done.json  the matching job's unit profiles (a cache)
    _pair_checkpoints/pair=<a>~<b>/<key>-<layers>.npz        a matching pair's finished layer groups (resume)
    _probes/set=photos/<name>.png                            the shipped photos and their crops, as probe images
    runs/<run id>/manifest.json, driver.log                  what each sweep run did
    _index/features.parquet                                  a cache of the feature rows' index, per part
                                                             fingerprint (sweep.store.index); never the truth
"""

from __future__ import annotations

import hashlib
import posixpath
import urllib.parse
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

#: Columns of a feature row, in order, with their Arrow types (the `model` column is the partition).
FEATURE_SCHEMA = pa.schema([
    ("weights", pa.string()),
    ("layer", pa.int32()),
    ("layer_name", pa.string()),
    ("site", pa.string()),
    ("feature", pa.int32()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("seed", pa.int64()),
    ("base_seed", pa.int64()),
    ("steps", pa.int32()),
    ("copies", pa.int32()),
    ("lr", pa.float64()),
    ("tv", pa.float64()),
    ("tv_coef", pa.float64()),
    ("recipe_source", pa.string()),
    ("beta1", pa.float64()),
    ("beta2", pa.float64()),
    ("eps", pa.float64()),
    ("color_mean", pa.float64()),
    ("color_std", pa.float64()),
    ("offset_std", pa.float64()),
    ("jitter", pa.int32()),
    ("image_size", pa.int32()),
    ("reference_scale", pa.bool_()),
    ("param", pa.string()),  # the parametrization (pixel, fourier, maco); null in rows made before the choice
    ("objective", pa.string()),  # unit, neuron, direction (sweep/method/objective.py); null: rows before, unit
    ("position", pa.int32()),  # neuron's position; null: the centre patch (or not a neuron)
    ("direction", pa.string()),  # direction's spec: A-B or FILE#sha256=pin
    ("negative", pa.bool_()),  # minimized
    ("diversity", pa.int32()),  # images per feature (recipe diversity); null: rows before the choice, 1
    ("diversity_weight", pa.float64()),
    ("accentuate", pa.string()),  # the photo accentuation started from (photo:NAME or FILE#sha256=pin); null: noise
    ("accentuate_weight", pa.float64()),
    ("spectrum", pa.string()),  # maco's folder of natural images, FOLDER#sha256=<listing>; null: the shipped photos
    ("method", pa.string()),  # the method in a few words (Recipe.method): "pixel unit", "maco -neuron@centre"
    ("act_init", pa.float64()),
    ("act_final", pa.float64()),
    ("pre_final", pa.float64()),   # an MLP unit's objective before its GELU on the final image (mlp, mlp_pre sites)
    ("post_final", pa.float64()),  # ... after it: <= 0 means the image switched the unit off
    ("shift_robustness", pa.float64()),  # sweep/method/measures.py: the objective on 8 seeded shifts / clean
    ("scale_robustness", pa.float64()),  # ... on zooms 0.8, 0.9, 1.1, 1.2 / clean
    ("plausibility", pa.float64()),  # best cosine of the model's final features with a reference photo's
    ("plausibility_reference", pa.float64()),  # the same for the photos among themselves (their mean)
    ("loss_final", pa.float64()),
    ("curve_steps", pa.list_(pa.int32())),
    ("loss_curve", pa.list_(pa.float32())),
    ("act_curve", pa.list_(pa.float32())),
    ("batch_features", pa.int32()),
    ("wall_s", pa.float64()),
    ("device", pa.string()),
    ("precision", pa.string()),
    ("features_per_pass", pa.int32()),
    ("versions", pa.string()),
    ("config_hash", pa.string()),
    ("image_path", pa.string()),
    ("created_at", pa.timestamp("ms", tz="UTC")),
    ("image_bytes", pa.int64()),
    ("variant_paths", pa.list_(pa.string())),  # a feature's other images (recipe diversity > 1), written before the row
    ("variant_seeds", pa.list_(pa.int64())),
    ("variant_act_final", pa.list_(pa.float64())),
    ("attribution_path", pa.string()),  # MACO's transparency map (param maco): summed absolute input gradients
    ("start_path", pa.string()),  # the photo an accentuation started from, as a PNG in the root (start_relpath)  # the PNG's size: a resume checks images against a listing (sweep.store.index)
])

#: Top-k natural images of each unit (split and model are the partition).
TOP_SCHEMA = pa.schema([("layer", pa.int32()), ("layer_name", pa.string()), ("site", pa.string()),
                        ("feature", pa.int32()), ("rank", pa.int32()), ("image_id", pa.string()),
                        ("activation", pa.float32())])

#: A unit's concept at one rank (model and layer are the partition): the score of the method, the
#: judge that embedded images and prompts, the vocabulary's hash, the split it was measured on.
LABEL_SCHEMA = pa.schema([("layer_name", pa.string()), ("site", pa.string()), ("feature", pa.int32()),
                          ("rank", pa.int32()), ("concept", pa.string()), ("score", pa.float32()),
                          ("method", pa.string()), ("judge", pa.string()), ("vocabulary", pa.string()),
                          ("vocabulary_hash", pa.string()), ("split", pa.string()), ("images", pa.int32()),
                          ("weights", pa.string()), ("created_at", pa.string())])

#: One classified image under one condition of an ablation (experiment and model are the partition).
ABLATION_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("label", pa.int32()),
    ("condition", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("top5", pa.list_(pa.int32())),
    ("correct1", pa.bool_()),
    ("correct5", pa.bool_()),
    ("loss", pa.float32()),
])

#: One (lr, tv) trial of a tuning, with its per-unit scores (model is the partition).
TRIAL_SCHEMA = pa.schema([
    ("trial", pa.string()), ("weights", pa.string()), ("family", pa.string()), ("site", pa.string()),
    ("lr", pa.float64()), ("tv", pa.float64()), ("steps", pa.int32()), ("base_seed", pa.int64()),
    ("grid", pa.string()), ("reference", pa.string()), ("score_version", pa.string()),
    ("status", pa.string()), ("error", pa.string()),
    ("act_final", pa.float64()), ("relative_activation", pa.float64()), ("robustness", pa.float64()),
    ("total_variation", pa.float64()), ("saturated_fraction", pa.float64()),
    ("spectrum_slope", pa.float64()), ("combined", pa.float64()),
    ("unit_layer", pa.list_(pa.int32())), ("unit_feature", pa.list_(pa.int32())),
    ("unit_seed", pa.list_(pa.int64())), ("unit_act_final", pa.list_(pa.float64())),
    ("unit_reference_act", pa.list_(pa.float64())), ("unit_relative_activation", pa.list_(pa.float64())),
    ("unit_robustness", pa.list_(pa.float64())), ("unit_total_variation", pa.list_(pa.float64())),
    ("unit_saturated_fraction", pa.list_(pa.float64())), ("unit_spectrum_slope", pa.list_(pa.float64())),
    ("unit_combined", pa.list_(pa.float64())), ("image_paths", pa.list_(pa.string())),
    ("recipe", pa.string()), ("device", pa.string()), ("precision", pa.string()),
    ("wall_s", pa.float64()), ("created_at", pa.timestamp("ms", tz="UTC")),
])


#: One unit's match in another model (sweep/experiments/matching.py; the model pair is the partition):
#: rank 0 is its best unit over all of model_b's layers; `mutual` marks a rank-0 match that is also
#: unit_b's best in model_a. probe/probe_hash name the probe images, images how many were readable.
MATCH_SCHEMA = pa.schema([
    ("model_a", pa.string()), ("layer_a", pa.int32()), ("site_a", pa.string()), ("unit_a", pa.int32()),
    ("model_b", pa.string()), ("layer_b", pa.int32()), ("site_b", pa.string()), ("unit_b", pa.int32()),
    ("score", pa.float32()), ("rank", pa.int32()), ("mutual", pa.bool_()), ("method", pa.string()),
    ("probe", pa.string()), ("probe_hash", pa.string()), ("images", pa.int32()),
    ("weights_a", pa.string()), ("weights_b", pa.string()), ("created_at", pa.string()),
])


#: A visualization shown to another model (sweep/experiments/transfer.py; model and other are the
#: partition): its unit's counterpart there (the best match), the counterpart's activation on the image
#: and where that stands against the counterpart's probe images (z, beats_probe).
TRANSFER_SCHEMA = pa.schema([
    ("layer", pa.int32()), ("site", pa.string()), ("feature", pa.int32()), ("image_path", pa.string()),
    ("layer_b", pa.int32()), ("site_b", pa.string()), ("unit_b", pa.int32()), ("match_score", pa.float32()),
    ("act_b", pa.float64()), ("z", pa.float64()), ("probe_mean", pa.float64()), ("probe_std", pa.float64()),
    ("probe_max", pa.float64()), ("beats_probe", pa.bool_()), ("error", pa.string()), ("method", pa.string()),
    ("probe_hash", pa.string()), ("weights_b", pa.string()), ("created_at", pa.string()),
])


def partition_value(value) -> str:
    """URI-encode a hive partition value (pyarrow decodes it back when reading)."""
    return urllib.parse.quote(str(value), safe="")


@dataclass(frozen=True)
class Dataset:
    """One dataset of a results root: its folder, hive partition keys (outermost first) and schema."""

    name: str
    keys: tuple[str, ...]
    schema: pa.Schema | None = None  # None: files, or rows whose columns the writer infers

    def folder(self, **keys) -> str:
        """`name/k1=v1/...` for the leading keys given, in the dataset's order."""
        unknown = set(keys) - set(self.keys)
        if unknown:
            raise ValueError(f"{self.name} has no partition key {sorted(unknown)[0]!r}; keys: {self.keys}")
        parts = []
        for key in self.keys:
            if key not in keys:
                break
            parts.append(f"{key}={partition_value(keys[key])}")
        if len(parts) != len(keys):
            raise ValueError(f"{self.name}: give its keys in order {self.keys}, a leading run of them")
        return posixpath.join(self.name, *parts)

    def part(self, filename: str, **keys) -> str:
        """A file's root-relative path, every partition key given."""
        if set(keys) != set(self.keys):
            raise ValueError(f"{self.name}: a file needs all of its keys {self.keys}")
        return posixpath.join(self.folder(**keys), filename)

    def keys_of(self, rel: str) -> dict[str, str]:
        """The partition values in a root-relative path under this dataset, parsed by pyarrow's hive
        partitioning (URI-decoded); keys not in the path are absent. Values are text."""
        inner = rel[len(self.name):].strip("/") if rel.startswith(self.name + "/") else rel.strip("/")
        folders = [s for s in inner.split("/") if "=" in s and s.split("=", 1)[0] in self.keys]
        if not folders:
            return {}
        hive = ds.HivePartitioning(pa.schema([(k, pa.string()) for k in self.keys]), segment_encoding="uri")
        try:
            found = ds.get_partition_keys(hive.parse("/" + "/".join(folders) + "/"))
        except (pa.ArrowInvalid, ValueError):
            return {}
        return {k: v for k, v in found.items() if v is not None}

    def values(self, fs, root: str, key: str, **outer) -> list[str]:
        """The values of one partition key present under the root (from folder names only), within
        the outer partitions given."""
        base = posixpath.join(root, self.folder(**outer))
        if not fs.exists(base):
            return []
        found = set()
        for path in fs.find(base, withdirs=True):
            value = self.keys_of(path[len(root) + 1:]).get(key)
            if value is not None:
                found.add(value)
        return sorted(found)

    def drop(self, fs, root: str, **keys) -> bool:
        """Remove a partition (all its files); False when there was none."""
        path = posixpath.join(root, self.folder(**keys))
        if not fs.exists(path):
            return False
        fs.rm(path, recursive=True)
        return True


FEATURES = Dataset("features", ("model",), FEATURE_SCHEMA)
IMAGES = Dataset("images", ("model", "layer"))
TOP_IMAGES = Dataset("top_images", ("split", "model"), TOP_SCHEMA)
TOP_THUMBS = Dataset("top_image_thumbs", ("split",))
INVARIANCE = Dataset("invariance", ("split", "model"))
ABLATIONS = Dataset("ablations", ("experiment", "model"), ABLATION_SCHEMA)
MAP_FILES = Dataset("activation_maps/files", ("model", "layer"))
MAP_TABLE = Dataset("activation_maps/table", ("model", "layer"))
LABELS = Dataset("labels", ("model", "layer"), LABEL_SCHEMA)
TUNING = Dataset("tuning", ("model",), TRIAL_SCHEMA)
TUNING_IMAGES = Dataset("tuning_images", ("model",))
MATCHES = Dataset("matches", ("pair",), MATCH_SCHEMA)
TRANSFER = Dataset("transfer", ("model", "other"), TRANSFER_SCHEMA)
PROFILES = Dataset("_profiles", ("model", "key"))  # underscore: a cache no dataset reader sees
PAIR_CHECKPOINTS = Dataset("_pair_checkpoints", ("pair",))  # a matching pair's finished layer groups, until its part
PROBES = Dataset("_probes", ("set",))  # probe images the job made itself (the shipped photos and crops)
RUNS = Dataset("runs", ())

#: Every dataset, by name; the folders a results root reserves for its data.
DATASETS = {d.name: d for d in (FEATURES, IMAGES, TOP_IMAGES, TOP_THUMBS, INVARIANCE, ABLATIONS, MAP_FILES, MAP_TABLE,
                                LABELS, TUNING, TUNING_IMAGES, MATCHES, TRANSFER, PROFILES, PAIR_CHECKPOINTS, PROBES, RUNS)}
DATA_FOLDERS = tuple(dict.fromkeys(d.name.split("/")[0] for d in DATASETS.values()))


#: The feature index cache (sweep.store.index): an underscore folder, so no dataset reader sees it.
FEATURE_INDEX = "_index/features.parquet"


def pair_name(model_a: str, model_b: str) -> str:
    """The `pair` partition of two models' matches: one folder per unordered pair (never parsed back:
    the rows name their models)."""
    return "~".join(sorted((model_a, model_b)))


def thumb_name(image_id: str) -> str:
    """The file of a top image's thumbnail: a hash, since image ids hold '/' and anything else."""
    return hashlib.sha256(str(image_id).encode("utf-8", "surrogatepass")).hexdigest()[:24] + ".png"


def attribution_relpath(model: str, layer: int, site: str, feature: int) -> str:
    """Where a MACO image's attribution (transparency) map is written, a greyscale PNG."""
    return IMAGES.part(f"{site}-{feature}-attribution.png", model=model, layer=layer)


def start_relpath(model: str, layer: int, site: str) -> str:
    """Where the photo an accentuation started from is written (as optimized: resized, cropped), once per layer."""
    return IMAGES.part(f"{site}-start.png", model=model, layer=layer)


def image_relpath(model: str, layer: int, site: str, feature: int, variant: int = 0) -> str:
    """Where a feature's visualization is written; variant j > 0: its j-th other image (recipe diversity)."""
    return IMAGES.part(f"{site}-{feature}{f'-v{variant}' if variant else ''}.png", model=model, layer=layer)
