"""Shared assertions for sweep tests: the stored results hold the plan exactly once."""

import io
import socket

import pandas as pd
from PIL import Image

from sweep.work.plan import expand


def planned_triples(config):
    return {tr for t in expand(config) for tr in t.triples()}


def stored(root, storage_options=None) -> pd.DataFrame:
    df = pd.read_parquet(f"{root}/features", storage_options=storage_options)
    df["model"] = df["model"].astype(str)
    return df


def assert_exactly_once(config, fs=None, storage_options=None):
    """Every planned triple appears once, nothing else appears, and every ok row's PNG decodes."""
    df = stored(config.out, storage_options)
    keys = list(zip(df["model"], df["layer"], df["site"], df["feature"]))
    assert len(keys) == len(set(keys)), "duplicated results"
    assert set(keys) == planned_triples(config)
    for path in df.loc[df["status"] == "ok", "image_path"]:
        if fs is None:
            data = open(f"{config.out}/{path}", "rb").read()
        else:
            data = fs.cat_file(f"{config.out}/{path}")
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    return df


def own_ray_processes() -> dict[int, str]:
    """pid -> title of the live ray:: processes under this test process: the workers of the Ray it
    started, never those of another Ray instance on the machine."""
    import os
    import subprocess

    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in table.splitlines():
        pid, ppid, *args = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), args[0] if args else ""))
    found, todo = {}, [os.getpid()]
    while todo:
        for pid, args in children.get(todo.pop(), []):
            todo.append(pid)
            if args.startswith("ray::") and "defunct" not in args:
                found[pid] = args
    return found


def job_main(name: str):
    """The main() of jobs/<name>.py, loaded as a module (jobs/ is a folder of scripts, not a package):
    a test runs the job in the test's process, where connect_ray finds the test's Ray already started."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"job_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_head(temp_dir: str, port: int, env: dict, *extra: str):
    """`ray start --head --block` on loopback in a new process group, with its own temp dir and every
    port its own (none of Ray's fixed defaults, which another Ray on the machine may hold); end it
    with stop_process_group, never `ray stop` (which ends every Ray on the host)."""
    import subprocess
    import sys
    from pathlib import Path

    ports = [f"--{name}-port={free_port()}" for name in (
        "object-manager", "node-manager", "ray-client-server", "dashboard-agent-listen",
        "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")]
    dashboard = [] if any(a.startswith("--include-dashboard") for a in extra) else ["--include-dashboard=false"]
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
         f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
         *ports, *dashboard, *extra],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_process_group(proc) -> None:
    """End the process group `proc` leads (a Ray head and all it started): SIGTERM, then SIGKILL.

    The grace is short: the group's Ray processes end within a second of SIGTERM, but `ray start
    --block` itself did not exit within 10 s of it (measured), so a longer wait only idles."""
    import os
    import signal
    import subprocess
    import time

    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)  # the group's other members exit after its leader; the next signal ends stragglers
