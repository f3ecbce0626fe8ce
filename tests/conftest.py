"""Test-wide environment: no network beyond loopback, deterministic and quiet libraries; the suite's
one shared Ray; tiers named by markers, most derived from the fixtures a test uses.

Tiers (pytest markers; `pytest -m unit` is the developer's fast loop, see the README):
  unit     none of the below: no Ray, no browser, no compiler, micro models (marked automatically)
  ray      the suite's shared local Ray (fixture `ray_local`)
  cluster  a Ray of its own: other processes, fake GPUs or nodes, killed workers (fixtures `own_ray`,
           `two_nodes`)
  browser  headless Chromium (marked where a test opens it)
  compile  torch.compile on the CPU (marked)
  zoo      every model of the zoo, built with random weights or described (marked)
  weights  trained weights: the packaged demo model (marked)
"""

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
# $RAY_TMPDIR/ray/ray_current_cluster (another program's, or a cluster's head); here each Ray is this
# run's own, under a temp root of this run's (short: Ray's socket paths), removed at exit.
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sweep-tests-", dir=os.environ.get("RAY_TMPDIR", "/tmp"))
atexit.register(shutil.rmtree, os.environ["RAY_TMPDIR"], ignore_errors=True)
# Weights a package ships are converted into this run's own cache (sweep.models.packaged), never the user's.
os.environ["SWEEP_CACHE_DIR"] = os.path.join(os.environ["RAY_TMPDIR"], "cache")
# A user's own `module:` models (tests/model_factories.py) are importable on Ray's workers too, as a
# user's module on the path of their job is.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")) if p)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: Markers a test gets from the fixtures it uses (directly or through other fixtures).
FIXTURE_TIERS = {"ray_local": "ray", "smoke_root": "ray", "own_ray": "cluster", "two_nodes": "cluster"}
SLOW_TIERS = ("ray", "cluster", "browser", "compile", "zoo", "weights")


def pytest_collection_modifyitems(config, items):
    """Mark each test's tier, then order the run: the unit tier first (fast feedback), then every test
    on the shared Ray together (one instance for all of them), then the tests that need a Ray of their
    own (the shared one is shut down once, before the first of them), the two-node tests last.
    The sort is stable, so files and tests keep their order within a group."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, tier in FIXTURE_TIERS.items():
            if fixture in names:
                item.add_marker(tier)
        if not any(item.get_closest_marker(t) for t in SLOW_TIERS):
            item.add_marker("unit")

    def group(item) -> tuple:
        if item.get_closest_marker("cluster"):
            return (3 if "two_nodes" in getattr(item, "fixturenames", ()) else 2,)
        return (1 if item.get_closest_marker("ray") else 0,)

    items.sort(key=group)


class SharedRay:
    """The suite's one local Ray: started in this process (the test is its driver and head, as a
    laptop user's job is) on first need, stopped before a test that starts a Ray of its own, and
    started again if a later test needs it (the ordering above makes that rare)."""

    def __init__(self):
        self.address: str | None = None

    def running(self) -> bool:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address

    def start(self) -> str:
        import ray

        if not self.running():
            if ray.is_initialized():  # connected to another test's Ray: leave it
                ray.shutdown()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            self.address = ray.get_runtime_context().gcs_address
        return self.address

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.address = None


@pytest.fixture(scope="session")
def _shared_ray():
    shared = SharedRay()
    yield shared
    shared.stop()


@pytest.fixture(scope="module")
def ray_local(_shared_ray):
    """The shared local Ray (2 CPUs, no dashboard, under this run's RAY_TMPDIR, ports of its own);
    returns its GCS address, which a job subprocess can join with `--address`."""
    return _shared_ray.start()


@pytest.fixture(scope="module")
def own_ray(_shared_ray):
    """For a test that starts a Ray of its own in this process: the shared one is stopped first."""
    _shared_ray.stop()


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory, _shared_ray):
    """The smoke preset (2 micro models x 3 blocks x 4 features), run once on the shared Ray: read it,
    or copy it before changing it."""
    from sweep.pipelines.feature_sweep import run_sweep
    from sweep.work.plan import SweepConfig

    _shared_ray.start()
    out = tmp_path_factory.mktemp("smoke") / "root"
    run_sweep(SweepConfig.from_dict({"preset": "smoke", "out": str(out),
                                     "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 2}}), progress=False)
    return out


@pytest.fixture(scope="session")
def two_nodes(_shared_ray):
    """Two Ray nodes on this machine (1 CPU and 2 fake GPUs each) that the driver joins, shared by
    the tests that need more than one node (run last: it stays up until the session ends)."""
    import ray
    from ray.cluster_utils import Cluster

    _shared_ray.stop()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def micro():
    """The micro ViT's anatomy and its random-weight network."""
    from sweep.models.anatomy import anatomy_of
    from sweep.models.build import build

    anatomy = anatomy_of("dev/vit-micro")
    return anatomy, build(anatomy.entry, "random")
