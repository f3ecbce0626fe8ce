"""Test-wide environment: no network beyond loopback, deterministic and quiet libraries."""

import os

# Set before any library reads them: pretrained requests fail fast instead of retrying for ~46 s,
# no telemetry, no cloud metadata lookups, and Ray (later) stays on 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

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
