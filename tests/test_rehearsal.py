"""The paper run rehearsed at CI size (`benchmarks/rehearse.py`): 2 of the paper preset's 813 layers
(512 features over 2 models, 4 batches of 128) through the real sweep with the stand-in engine, into
an S3-protocol server on loopback that counts every request it serves.

Exactness, not speed: every planned feature exactly once; a resume of the complete root does
nothing and reads no file per feature (a listing, the index cache); after 1 % of the parts and PNGs
are deleted, a resume redoes exactly those; the README's queries agree with the rows written; the
atlas holds a page for every feature. The costs at size are `benchmarks/rehearse.py`'s business.
"""

import sys
from pathlib import Path

import fsspec
import pytest
from sweep_checks import free_port

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import rehearse  # noqa: E402
from rehearsal import stages  # noqa: E402

from sweep.work.plan import SweepConfig  # noqa: E402


@pytest.fixture(scope="module")
def counting_s3():
    server = rehearse.CountingS3(free_port())
    yield server
    server.stop()


def stage(name: str, config: dict, **spec) -> dict:
    return stages.STAGES[name]({"stage": name, **spec}, SweepConfig.from_dict(config))


def requests(server, before: dict) -> dict:
    after = server.counts()
    return {k: after.get(k, 0) - before.get(k, 0) for k in rehearse.KINDS}


def test_rehearsal_at_ci_size_is_exact_and_resumes_without_reading_per_feature(ray_local, counting_s3):
    counting_s3.make_bucket("rehearsal-ci")
    options = counting_s3.options()
    layers = rehearse.spread(rehearse.paper_layers(), 2)
    assert len({m for m, _ in layers}) == 2, "two models of the paper preset"
    config = rehearse.rehearsal_config("s3://rehearsal-ci/root", options, layers, nodes=2)

    first = stage("sweep", config)
    assert (first["done"], first["skipped"], first["failed"], first["batches"]) == (512, 0, 0, 4)

    before = counting_s3.counts()
    again = stage("sweep", config)
    used = requests(counting_s3, before)
    assert (again["done"], again["skipped"], again["batches"]) == (0, 512, 0), "a complete root: nothing to do"
    # the bucket check, the write probe, a listing of the parts, the index cache, a listing of each
    # model's images: no request per part or per image
    assert used["get"] <= 2 and used["head"] <= 4 and used["list"] <= 6, used
    assert sum(used.values()) <= 14, used

    fs = fsspec.filesystem("s3", **options)
    gone = rehearse.damage(fs, "rehearsal-ci/root")
    assert gone == {"parts_deleted": 1, "pngs_deleted": 5}
    redo = stage("sweep", config)
    assert 128 <= redo["done"] <= 128 + 5 and redo["failed"] == 0, "the lost part's batch and the lost PNGs' features"
    assert redo["done"] + redo["skipped"] == 512

    check = stage("verify", config)
    assert check["exactly_once"] and check["all_ok"] and check["images_present"] and check["runner_rehearsal"]
    assert check["rows"] == check["planned"] == 512
    assert stage("queries", config)["queries_agree"]
    atlas = stage("atlas", config, site="s3://rehearsal-ci/site")
    assert atlas["atlas_feature_pages"] == 512 and atlas["atlas_holds_plan"]
