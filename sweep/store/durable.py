"""Whether a results root outlives the run: a root on one node's disk is refused on a cluster.

On several nodes each worker would write to its own disk; under Ray Jobs a relative path lands in
the job's temporary working_dir package, which Ray deletes; after `ray submit` the head's disk is a
container that `ray down` removes. Only the driver, once connected, knows which holds, so the facts
come in as plain values (sweep.pipelines.feature_sweep gathers them from Ray) and the rule stays testable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sweep.core.errors import SweepError

#: Set by Ray's job supervisor in the entrypoint's environment (ray job submit, KubeRay RayJob).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

#: What to use instead of a node-local root; shared by every refusal so the advice is the same.
DURABLE_HINT = ("use object storage (--out s3://BUCKET/PATH, or SWEEP_OUT for jobs/all_models.py) or a shared "
                "mount (--out file:///mnt/shared/PATH --shared-filesystem)")


@dataclass(frozen=True)
class ClusterFacts:
    """Where the driver runs, as far as it can tell after connecting."""

    alive_nodes: int = 1
    attached: bool = False  # joined a Ray instance it did not start (ray submit, RAY_ADDRESS)
    ray_job: bool = False  # runs as a Ray job's entrypoint

    def cluster(self) -> str:
        """Why this is a cluster (for the error line), or '' on a laptop's own one-node Ray."""
        if self.alive_nodes > 1:
            return f"on {self.alive_nodes} Ray nodes"
        if self.ray_job:
            return "as a Ray job"
        if self.attached:
            return "on a Ray cluster this driver joined (ray submit, --address or RAY_ADDRESS)"
        return ""


def under_ray_job(environ: Mapping[str, str] = os.environ) -> bool:
    return RAY_JOB_ENV in environ


def is_relative(out: str) -> bool:
    """A plain path that depends on the working directory (a URL or absolute path does not)."""
    return "://" not in out and not os.path.isabs(os.path.expanduser(out))


def check_durable_root(out: str, local: bool, facts: ClusterFacts, shared_filesystem: bool = False) -> None:
    """Refuse, in one line, a node-local results root where the results would not survive or meet.

    `local`: the root's filesystem is this machine's (a path or file://). `shared_filesystem`: the
    user says that path is the same mount on every node, which nothing here can check.
    """
    if not local:
        return
    if facts.ray_job and is_relative(out):
        raise SweepError(f"out {out!r}: a relative results root under Ray Jobs lands in the job's temporary "
                         "working_dir, which Ray deletes; use object storage (--out s3://BUCKET/PATH) or an "
                         "absolute shared mount (--out file:///mnt/shared/PATH --shared-filesystem)")
    where = facts.cluster()
    if where and not shared_filesystem:
        raise SweepError(f"out {out!r}: a results root on this node's disk, but the sweep runs {where}; "
                         + DURABLE_HINT)
