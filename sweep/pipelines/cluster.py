"""The Ray connection: join an existing cluster only when asked, else start a private local instance.

`ray.init(address="auto")` joins *any* Ray on the machine (it falls back to grepping `ps` for a GCS),
another program's private instance included, and a plain `ray.init()` joins whatever `ray start` last
recorded in /tmp/ray/ray_current_cluster. So a job attaches only on one of these signals, in order:

1. `--address` (host:port, `ray://...`, `auto` for Ray's own resolution, `local` for a new instance);
2. `RAY_ADDRESS` in the environment: set by the user, and by Ray Jobs for every entrypoint
   (`ray job submit`, KubeRay's RayJob);
3. this machine is the head of a cluster launched by `ray up` (the launcher puts
   `~/ray_bootstrap_config.yaml` there; Ray Tune uses the same test): that is `ray submit`'s case, which
   runs the script over ssh with no RAY_ADDRESS; Ray's own resolution (`auto`) then finds the head.

Otherwise the job starts its own instance (`address="local"`), which `ray.shutdown()` stops at exit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sweep.core.errors import SweepError, one_line
from sweep.store.durable import under_ray_job

log = logging.getLogger("sweep")

#: Where Ray's cluster launcher leaves the cluster config on the head it starts (and only there).
LAUNCHER_CONFIG = "ray_bootstrap_config.yaml"

ADDRESS_HELP = ("Ray cluster to join: host:port, ray://host:port, 'auto' (a Ray started with `ray start` on "
                "this machine) or 'local' (default: RAY_ADDRESS, set under Ray Jobs; the head of a `ray up` "
                "cluster when run there, as by `ray submit`; else a new local instance of this job's own)")


@dataclass(frozen=True)
class Target:
    """What to pass to `ray.init(address=...)`, and why, for the log line."""

    address: str
    reason: str

    @property
    def local(self) -> bool:
        return self.address == "local"


def choose_target(address: str | None, environ: Mapping[str, str], home: Path) -> Target:
    """The cluster to join, from the explicit signals only (see the module docstring)."""
    if address and address.strip():
        return Target(address.strip(), "--address")
    env = environ.get("RAY_ADDRESS", "").strip()
    if env:
        return Target(env, "RAY_ADDRESS, set by Ray Jobs" if under_ray_job(environ) else "RAY_ADDRESS")
    if (home / LAUNCHER_CONFIG).is_file():
        return Target("auto", f"the head of a `ray up` cluster (~/{LAUNCHER_CONFIG})")
    return Target("local", "no --address, no RAY_ADDRESS, not a `ray up` head")


def address_arg(text: str) -> str:
    """argparse type of --address: local, auto, host:port or ray://host:port, refused as a flag (one
    line, before anything starts) when it cannot name a cluster."""
    import argparse

    value = text.strip()
    if value in ("local", "auto"):
        return value
    allowed = "give host:port, ray://host:port, auto, or --address local for a new instance"
    if not value:
        raise argparse.ArgumentTypeError(f"empty; {allowed}")
    scheme, sep, _ = value.partition("://")
    if sep and scheme != "ray":
        raise argparse.ArgumentTypeError(f"{text!r}: scheme {scheme}:// is not Ray's; {allowed}")
    rest = value[len("ray://"):] if sep else value
    host, colon, port = rest.rpartition(":")
    if not colon or not host or any(c.isspace() for c in rest) or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port with a port of 1 to 65535; {allowed}")
    return value


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port` or `ray://host:port` address; None for `local`, `auto` and
    anything else Ray resolves itself."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(target: Target, within: float = 10.0) -> None:
    """A host:port nobody answers is one line within `within` seconds: `ray.init` itself retries a
    dead address for minutes, silently, and does not end on SIGTERM while it does."""
    import socket
    import time

    where = host_port(target.address)
    if where is None:
        return
    if not 0 < where[1] < 65536:
        raise SweepError(f"Ray address {target.address!r} (from {target.reason}): port {where[1]} is not a TCP port "
                         "(1 to 65535)")
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(where, timeout=min(3.0, within)):
                return
        except OSError as exc:
            if time.monotonic() + 1 > deadline:
                raise SweepError(f"Ray address {target.address!r} (from {target.reason}): nothing answers there "
                                 f"({one_line(exc, 120)}, for {within:.0f} s); give a running cluster's host:port, "
                                 "or --address local for a new instance") from None
            time.sleep(1)


def connect_ray(address: str | None = None) -> None:
    """Join the cluster asked for, or start a private local Ray; one log line says which."""
    # Ray's usage statistics phone home; this tool sends nothing anywhere unless asked to.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    target = choose_target(address, os.environ, Path.home())
    check_reachable(target)
    try:
        ray.init(address=target.address)
    except (ConnectionError, ValueError) as exc:
        raise SweepError(f"Ray address {target.address!r} (from {target.reason}): cannot connect: "
                         f"{one_line(exc, 200)}; give a running cluster's host:port, or --address local") from exc
    if target.local:
        log.info("started a local Ray instance (%s; --address auto joins a Ray on this machine)", target.reason)
    else:
        log.info("attached to the Ray cluster at %s (%s)", ray.get_runtime_context().gcs_address, target.reason)
