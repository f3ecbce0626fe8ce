"""A results root on one node's disk is refused on a cluster before any work; file:// with
--shared-filesystem is allowed. The rule on its own, then through run_sweep and jobs/all_models.py on
a real two-node Ray cluster."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweep.core.errors import SweepError
from sweep.pipelines.feature_sweep import cluster_facts, run_sweep
from sweep.store.durable import RAY_JOB_ENV, ClusterFacts, check_durable_root, under_ray_job
from sweep.work.plan import SweepConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import all_models  # noqa: E402

LAPTOP = ClusterFacts()
TWO_NODES = ClusterFacts(alive_nodes=2, attached=True)
JOINED = ClusterFacts(attached=True)  # ray submit on a head whose GPU nodes are still booting
RAY_JOB = ClusterFacts(attached=True, ray_job=under_ray_job({RAY_JOB_ENV: "{}"}))


@pytest.mark.parametrize("out, local, facts, shared, refused", [
    ("results/paper", True, LAPTOP, False, None),
    ("/data/atlas", True, LAPTOP, False, None),
    ("s3://bucket/atlas", False, TWO_NODES, False, None),
    ("s3://bucket/atlas", False, RAY_JOB, False, None),
    ("results/paper", True, TWO_NODES, False, "on 2 Ray nodes"),
    ("/data/atlas", True, TWO_NODES, False, "on 2 Ray nodes"),
    ("file:///mnt/shared/atlas", True, TWO_NODES, False, "--shared-filesystem"),
    ("file:///mnt/shared/atlas", True, TWO_NODES, True, None),
    ("/data/atlas", True, JOINED, False, "this driver joined"),
    ("/mnt/shared/atlas", True, RAY_JOB, True, None),
    ("results/smoke", True, RAY_JOB, False, "working_dir, which Ray deletes"),
    ("results/smoke", True, RAY_JOB, True, "working_dir, which Ray deletes"),  # never shared
])
def test_rule(out, local, facts, shared, refused):
    if refused is None:
        check_durable_root(out, local, facts, shared)
        return
    with pytest.raises(SweepError) as err:
        check_durable_root(out, local, facts, shared)
    message = str(err.value)
    assert "\n" not in message and refused in message and repr(out) in message
    assert "s3://" in message and "file:///mnt/shared/" in message


def tiny(out: str) -> SweepConfig:
    return SweepConfig.from_dict({
        "models": ["dev/vit-micro"], "weights": "random", "layers": [0], "out": out,
        "features": {"mode": "first", "count": 2}, "features_per_batch": 1, "recipe": {"steps": 2, "jitter": 4},
        "resources": {"num_gpus": 0, "num_cpus": 0.5, "workers": 2}})


def test_cluster_facts_on_two_nodes(two_nodes):
    assert cluster_facts() == ClusterFacts(alive_nodes=2, attached=True, ray_job=False)


def test_local_root_refused_before_any_work(two_nodes, tmp_path):
    root = tmp_path / "atlas"
    for out in (str(root), f"file://{root}"):
        with pytest.raises(SweepError, match="on 2 Ray nodes") as err:
            run_sweep(tiny(out), progress=False)
        assert "\n" not in str(err.value)
    assert not root.exists(), "nothing may be written under a refused root"


def run_job(argv, capsys) -> tuple[int, str]:
    code = all_models.main([*argv, "--preset", "smoke", "--quiet"])
    err = capsys.readouterr().err.strip()
    return code, err


def test_job_without_out_is_refused_on_a_cluster(two_nodes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEP_OUT", raising=False)
    code, err = run_job([], capsys)
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("all_models.py: error: out 'results/smoke'") and "SWEEP_OUT" in err
    assert not (tmp_path / "results").exists()


def test_sweep_out_is_the_default_and_out_wins(two_nodes, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SWEEP_OUT", str(tmp_path / "from-env"))
    code, err = run_job([], capsys)
    assert code == 2 and repr(str(tmp_path / "from-env")) in err
    code, err = run_job(["--out", str(tmp_path / "from-flag")], capsys)
    assert code == 2 and repr(str(tmp_path / "from-flag")) in err
    assert not any(tmp_path.iterdir())


def test_relative_root_under_ray_jobs_refused(two_nodes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RAY_JOB_ENV, "{}")  # what Ray's job supervisor sets for an entrypoint
    code, err = run_job(["--out", "results/smoke", "--shared-filesystem"], capsys)
    assert code == 2 and err.count("\n") == 0 and "Ray deletes" in err, err
    assert not (tmp_path / "results").exists()


def test_shared_filesystem_allows_file_url(two_nodes, tmp_path):
    root = tmp_path / "shared"
    report = run_sweep(tiny(f"file://{root}"), progress=False, shared_filesystem=True)
    assert (report.done, report.failed) == (2, 0)
    assert len({w["node_id"] for w in report.workers}) >= 1
    df = pd.read_parquet(root / "features")
    assert sorted(df["feature"]) == [0, 1] and set(df["status"]) == {"ok"}
    assert all((root / p).is_file() for p in df["image_path"])
    manifest = json.loads(next((root / "runs").glob("*/manifest.json")).read_text())
    assert manifest["shared_filesystem"] is True and manifest["status"] == "finished"
