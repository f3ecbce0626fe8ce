"""benchmarks/run_gpu.sh keeps to its time box: --help gives the parts with their H100 estimates, bad
input stops before any work, a part cut at the deadline keeps the rows it wrote and later parts are
skipped (a stand-in Python that hangs), and one micro run on the CPU goes through bench_engine."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A part that logs its arguments, appends a row to --csv, then hangs like a long GPU part.
HANGS = """echo "$*" >> "$(dirname "$0")/argv.log"
while [ $# -gt 0 ]; do if [ "$1" = --csv ]; then echo row >> "$2"; fi; shift; done
exec sleep 30
"""


def stand_in(tmp_path: Path, part: str) -> str:
    """A stand-in for Python: it answers the start-up query (sparing a torch import) and runs the bash
    lines `part` for every part."""
    path = tmp_path / "python"
    path.write_text('#!/usr/bin/env bash\nif [ "$1" = -c ]; then echo cpu; echo "device cpu; a stand-in"; exit 0; fi\n'
                    + part)
    path.chmod(0o755)
    return str(path)


def run_gpu(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "benchmarks/run_gpu.sh", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def test_help_lists_the_parts_in_order_with_their_h100_estimates():
    r = run_gpu("--help")
    assert r.returncode == 0
    plan = r.stdout.split("Parts in the order this run takes them")[1].splitlines()[1:]
    assert [line.split()[0] for line in plan] == ["start-up", "engine", "families", "ablation", "fidelity", "methods",
                                                  "matching"]
    assert all(line.split()[2] == "min" for line in plan)
    assert "2026-11-26-engine-h200.csv" in r.stdout  # where the estimates come from


@pytest.mark.parametrize("args, env", [(["--fast"], {}), (["a", "b"], {}), ([], {"PARTS": "engine speed"}),
                                       ([], {"BUDGET_S": "9m"}), ([], {"ENGINE_VARIANTS": "fp16"})])
def test_bad_input_is_one_error_line_and_exit_2_before_any_work(tmp_path, args, env):
    out = tmp_path / "out"
    r = run_gpu(*args, out, **env)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert r.stdout == "" and not out.exists()


def test_a_part_cut_at_the_deadline_keeps_its_rows_and_later_parts_are_skipped(tmp_path):
    r = run_gpu(tmp_path / "out", PYTHON=stand_in(tmp_path, HANGS), BUDGET_S="2", MIN_LEFT_S="0",
                PARTS="engine families")
    assert r.returncode == 0, r.stderr
    assert "== engine: cut at the deadline" in r.stdout and "== families: skipped" in r.stdout
    [csv] = (tmp_path / "out").glob("*-engine-cpu.csv")
    assert csv.read_text() == "row\n"  # written before the cut, kept after it
    [argv] = (tmp_path / "argv.log").read_text().splitlines()
    assert "--models vit_base_patch16_224 --features 128 --warmup 3 --iters 5 --variants fp32 bf16" in argv


def test_micro_families_run_on_cpu_then_a_part_without_the_time_it_needs_is_skipped(tmp_path):
    python = stand_in(tmp_path, f'exec {shlex.quote(sys.executable)} "$@"\n')
    r = run_gpu(tmp_path / "out", PYTHON=python, BUDGET_S="80", PARTS="families ablation",
                FAMILY_MODELS="dev/vit-micro", FAMILY_LAYERS="first last", FAMILY_VARIANTS="fp32",
                FEATURES="2", WARMUP="1", ITERS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== families: done in" in r.stdout and "== ablation: skipped" in r.stdout  # it needs 91 s
    [engine] = (tmp_path / "out").glob("*-engine-cpu.csv")
    rows = pd.read_csv(engine)
    assert list(rows.variant) == ["baseline", "engine:fp32"] * 2 and list(rows.layer) == [0, 0, 2, 2]
    assert set(rows.family) == {"vit"}
    [families] = (tmp_path / "out").glob("*-families-cpu.csv")
    assert list(pd.read_csv(families).family) == ["vit"]
