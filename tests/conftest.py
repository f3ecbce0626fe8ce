"""Test-wide environment: no network beyond loopback, deterministic and quiet libraries."""

import atexit
import os
import shutil
import tempfile

# Set before any library reads them: pretrained requests fail fast instead of retrying for ~46 s,
# no telemetry, no cloud metadata lookups, and Ray (later) stays on 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# Hermetic Ray: a plain ray.init() joins RAY_ADDRESS, or the Ray that `ray start` last recorded in
# $RAY_TMPDIR/ray/ray_current_cluster (another program's, or a cluster's head); here each test's Ray
# is its own, under a temp root of this run's (short: Ray's socket paths), removed at exit.
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sweep-tests-", dir=os.environ.get("RAY_TMPDIR", "/tmp"))
atexit.register(shutil.rmtree, os.environ["RAY_TMPDIR"], ignore_errors=True)
# Weights a package ships are converted into this run's own cache (sweep.models.packaged), never the user's.
os.environ["SWEEP_CACHE_DIR"] = os.path.join(os.environ["RAY_TMPDIR"], "cache")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def micro():
    """The micro ViT's anatomy and its random-weight network."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build

    anatomy = anatomy_of("dev/vit-micro")
    return anatomy, build(anatomy.entry, "random")
