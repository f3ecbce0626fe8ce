"""cluster.yaml, infra/rayjob.yaml and infra/Dockerfile agree with each other, with Ray's schema, with
the pinned torch build, and carry the results root to the job (rendered as Ray's launcher runs it)."""

import re
import shlex
import sys
import types
from pathlib import Path

import torch
import yaml

from sweep.store.durable import ClusterFacts, check_durable_root

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import all_models  # noqa: E402

CLUSTER_TEXT = (REPO / "cluster.yaml").read_text()
CLUSTER = yaml.safe_load(CLUSTER_TEXT)
RAYJOB = yaml.safe_load((REPO / "infra" / "rayjob.yaml").read_text())
DOCKERFILE = (REPO / "infra" / "Dockerfile").read_text()
SETUP = (REPO / "scripts" / "setup.sh").read_text()
ON_A_CLUSTER = ClusterFacts(alive_nodes=2, attached=True, ray_job=True)


def pin(text: str, package: str) -> str:
    versions = set(re.findall(rf"\b{package}==([\w.+]+)", text))
    assert len(versions) == 1, f"{package}: one pinned version expected, found {versions}"
    return versions.pop()


def test_cluster_yaml_matches_ray_schema():
    from ray.autoscaler._private.util import validate_config

    validate_config(CLUSTER)
    node_types = CLUSTER["available_node_types"]
    assert node_types[CLUSTER["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = node_types["gpu_worker"]
    assert gpu["max_workers"] >= 1 and gpu["node_config"]["IamInstanceProfile"]["Name"]


def test_ami_is_explicit_and_new_enough_for_the_torch_build():
    assert "latest_dlami" not in re.sub(r"#.*", "", CLUSTER_TEXT), "latest_dlami resolves to an old driver"
    amis = {t["node_config"]["ImageId"] for t in CLUSTER["available_node_types"].values()}
    assert len(amis) == 1, "head and GPU workers boot the same AMI"
    assert re.fullmatch(r"ami-([0-9a-f]{8,17}|REPLACE-[\w-]+)", amis.pop())
    # The torch build's CUDA major version decides the driver: CUDA 13 needs an NVIDIA driver >= 580.
    assert torch.version.cuda.startswith("13.") and re.search(r"driver\s*\n?\s*#?\s*>= 580", CLUSTER_TEXT)


def test_image_installs_every_dependency_with_the_pinned_torch():
    assert "--no-deps" not in DOCKERFILE
    assert re.search(r"pip install [^\n]*-e \.\s*$", DOCKERFILE, re.M), "the package with its dependencies"
    assert all("--no-deps" not in c for c in CLUSTER["setup_commands"])
    for package in ("torch", "torchvision"):
        assert pin(DOCKERFILE, package) == pin(SETUP, package)
    assert pin(DOCKERFILE, "torch") == torch.__version__.split("+")[0]
    # The base image and torch's wheel index are the CUDA of the pinned build (cu130 for CUDA 13.0).
    cuda = "cu" + torch.version.cuda.replace(".", "")
    ray_version = RAYJOB["spec"]["rayClusterSpec"]["rayVersion"]
    assert f"FROM rayproject/ray:{ray_version}-py311-{cuda}\n" in DOCKERFILE
    assert f"download.pytorch.org/whl/{cuda} " in DOCKERFILE
    assert "BAKE_WEIGHTS" in DOCKERFILE and (REPO / "infra" / "prefetch_weights.py").is_file()


def test_kuberay_job_runs_the_same_job_and_image():
    job = RAYJOB
    assert job["kind"] == "RayJob" and "jobs/all_models.py" in job["spec"]["entrypoint"]
    spec = job["spec"]["rayClusterSpec"]
    images = {c["image"] for c in spec["headGroupSpec"]["template"]["spec"]["containers"]}
    for group in spec["workerGroupSpecs"]:
        images |= {c["image"] for c in group["template"]["spec"]["containers"]}
        assert all(c["resources"]["limits"]["nvidia.com/gpu"] == 1 for c in group["template"]["spec"]["containers"])
    assert images == {CLUSTER["docker"]["image"]}


def test_kuberay_job_gets_the_results_root():
    env = yaml.safe_load(RAYJOB["spec"]["runtimeEnvYAML"])["env_vars"]
    assert "--out" not in RAYJOB["spec"]["entrypoint"], "one place for the root: SWEEP_OUT"
    out = all_models.results_root(None, None, "paper", env)
    assert out == env[all_models.OUT_ENV] and out.startswith("s3://")
    check_durable_root(out, False, ON_A_CLUSTER)  # accepted under Ray Jobs


class _Remote:
    """Ray's SSH runner, replaced: records each command and answers the container's $HOME."""

    def __init__(self):
        self.commands: list[str] = []

    def run(self, cmd, with_output=False, **_):
        self.commands.append(cmd)
        return b"/home/ray\n" if with_output else ""


def test_ray_submit_runs_the_job_with_the_results_root_in_its_env():
    """What `ray submit --tmux cluster.yaml jobs/all_models.py` runs on the head: Ray's own functions
    render the container's `docker run` (run_options) and the `docker exec` of the job in it."""
    from ray.autoscaler._private.command_runner import DockerCommandRunner
    from ray.autoscaler._private.commands import _exec
    from ray.autoscaler._private.docker import docker_start_cmds

    docker = CLUSTER["docker"]
    run = docker_start_cmds(CLUSTER["auth"]["ssh_user"], docker["image"], CLUSTER["file_mounts"],
                            docker["container_name"], docker["run_options"] + docker.get("head_run_options", []),
                            CLUSTER["cluster_name"], "/home/ray", "docker")
    words = shlex.split(run)
    env = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-e")
    runner = DockerCommandRunner(docker, log_prefix="", node_id="head", provider=None, auth_config=CLUSTER["auth"],
                                 cluster_name=CLUSTER["cluster_name"], process_runner=None, use_internal_ip=False)
    runner.ssh_command_runner = remote = _Remote()
    _exec(types.SimpleNamespace(cmd_runner=runner), "python ~/all_models.py", tmux=True, run_env="docker")
    job = remote.commands[-1]
    assert job.startswith(f"docker exec -it  {docker['container_name']} ") and "tmux new -d" in job
    assert "python /home/ray/all_models.py" in job and "--out" not in job
    # `docker exec` runs in the container started by `run`, with its -e environment.
    assert f"--name {docker['container_name']} " in run and docker["image"] in words
    out = all_models.results_root(None, None, "paper", env)
    assert out == env["SWEEP_OUT"] and out.startswith("s3://")
    check_durable_root(out, False, ON_A_CLUSTER)
