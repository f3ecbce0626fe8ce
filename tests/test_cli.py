"""The command line end to end: outputs on disk, read back with pandas; errors as one line, exit 2."""

import hashlib
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from PIL import Image

from sweep.cli import main
from sweep.models.build import build
from sweep.models.zoo import get_entry

MICRO = ["--model", "dev/vit-micro", "--weights", "random", "--steps", "6", "--jitter", "4", "--quiet"]


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_visualize_writes_pngs_and_parquet(tmp_path, capsys):
    code, out, _ = run_cli(["visualize", *MICRO, "--layer", "1", "--feature", "0", "5", "9",
                            "--batch-size", "2", "--out", str(tmp_path)], capsys)
    assert code == 0
    df = pd.read_parquet(tmp_path / "features")
    assert len(df) == 3 and sorted(df["feature"]) == [0, 5, 9]
    assert set(df["model"].astype(str)) == {"dev/vit-micro"}  # partition value decoded
    row = df.sort_values("feature").iloc[0]
    assert row["layer"] == 1 and row["layer_name"] == "blocks.1" and row["site"] == "mlp"
    assert row["seed"] == 0 and row["steps"] == 6 and row["copies"] == 8 and row["lr"] == 0.1
    assert row["tv_coef"] == pytest.approx(0.0005) and row["weights"] == "random:0"
    assert list(row["curve_steps"]) == [0, 6] and len(row["loss_curve"]) == 2
    assert row["device"] == "cpu" and "timm" in json.loads(row["versions"])
    assert len(row["config_hash"]) == 16 and df["config_hash"].nunique() == 1
    assert df["batch_features"].tolist().count(2) == 2  # batches of 2 and 1
    for path in df["image_path"]:
        with Image.open(tmp_path / path) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
            im.load()
    assert len(list((tmp_path / "features").rglob("*.parquet"))) == 2
    assert not list(tmp_path.rglob(".tmp-*"))
    assert "mlp-5.png" in out


def test_same_seed_same_bytes_and_rerun_replaces(tmp_path, capsys):
    args = ["visualize", *MICRO, "--layer", "2", "--feature", "3", "4"]
    assert run_cli([*args, "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run_cli([*args, "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert run_cli([*args, "--out", str(tmp_path / "b")], capsys)[0] == 0  # same job again
    pngs_a = sorted((tmp_path / "a").rglob("*.png"))
    assert len(pngs_a) == 2
    for pa in pngs_a:
        pb = tmp_path / "b" / pa.relative_to(tmp_path / "a")
        assert pa.read_bytes() == pb.read_bytes()
    assert len(pd.read_parquet(tmp_path / "b" / "features")) == 2  # replaced, not duplicated
    other = run_cli([*args, "--seed", "100", "--out", str(tmp_path / "c")], capsys)
    assert other[0] == 0
    png_c = tmp_path / "c" / pngs_a[0].relative_to(tmp_path / "a")
    assert png_c.read_bytes() != pngs_a[0].read_bytes()
    assert sorted(pd.read_parquet(tmp_path / "c" / "features")["seed"]) == [103, 104]


def test_local_weights_path(tmp_path, capsys):
    net = build(get_entry("dev/vit-micro"), "random")
    with torch.no_grad():
        net.blocks[0].mlp.fc1.bias.add_(1.0)
    ckpt = tmp_path / "micro.pt"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    from safetensors.torch import save_file

    save_file(net.state_dict(), tmp_path / "micro.safetensors")
    for i, path in enumerate((ckpt, tmp_path / "micro.safetensors")):
        code, _, err = run_cli(["visualize", "--model", "dev/vit-micro", "--weights", str(path), "--steps",
                                "1", "--layer", "0", "--feature", "1", "--quiet",
                                "--out", str(tmp_path / f"out{i}")], capsys)
        assert code == 0, err
        df = pd.read_parquet(tmp_path / f"out{i}" / "features")
        (label,) = set(df["weights"])  # the file, pinned to its bytes
        assert label == f"{path}#sha256={hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


@pytest.mark.parametrize("args, expected", [
    (["--model", "vit_nope"], "unknown model 'vit_nope'"),
    (["--model", "dev/vit-micro", "--layer", "7"], "layer 7 out of range for dev/vit-micro: allowed 0..2"),
    (["--model", "dev/vit-micro", "--layer", "blocks.9"], "unknown layer 'blocks.9'"),
    (["--model", "dev/vit-micro", "--feature", "64"], "feature 64 out of range"),
    (["--model", "dev/vit-micro", "--site", "channel"], "site 'channel' is not available"),
    (["--model", "dev/vit-micro", "--site", "nonsense"], "allowed: mlp, q, k, v, attn_out"),
    (["--model", "resnet50", "--site", "q"], "site 'q' is not available at block layer1.0; allowed: channel"),
    (["--model", "swin_tiny_patch4_window7_224", "--site", "k"], "allowed: mlp"),
    (["--model", "dev/vit-micro", "--weights", "/nonexistent.pt"], "no such file"),
    (["--model", "dev/vit-micro", "--weights", "pretrained"], "has no pretrained weights"),
    (["--model", "dev/vit-micro", "--steps", "0"], "--steps: input should be greater than or equal to 1; got 0"),
    (["--model", "dev/vit-micro", "--device", "warp-drive"], "device 'warp-drive' is not usable here"),
    (["--model", "dev/vit-micro", "--features-per-pass", "0"], "--features-per-pass: input should be greater than or equal to 1; got 0"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, expected):
    base = {"--layer": "0", "--feature": "0", "--weights": "random", "--out": str(tmp_path)}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    code, _, err = run_cli(["visualize", *[x for kv in base.items() for x in kv], "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), err
    assert expected in lines[0]
    assert not list(tmp_path.rglob("*.png"))


def test_corrupt_weights_file(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    code, _, err = run_cli(["visualize", "--model", "dev/vit-micro", "--weights", str(bad), "--layer", "0",
                            "--feature", "0", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not a readable safetensors file" in err and "safetensors file or torch state dict" in err


def test_mismatched_weights(tmp_path, capsys):
    torch.save({"blocks.0.mlp.fc1.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    code, _, err = run_cli(["visualize", "--model", "dev/vit-micro", "--weights", str(tmp_path / "other.pt"),
                            "--layer", "0", "--feature", "0", "--out", str(tmp_path)], capsys)
    assert code == 2 and "do not fit dev/vit-micro" in err and len(err.strip().splitlines()) == 1


def test_pretrained_offline_is_one_clear_line(tmp_path):
    # A subprocess, so the error path runs exactly as a user meets it (HF_HUB_OFFLINE=1 from conftest).
    proc = subprocess.run([sys.executable, "-m", "sweep", "visualize", "--model", "deit_tiny_distilled_patch16_224",
                           "--layer", "0", "--feature", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("sweep: error:")]
    assert len(errors) == 1
    assert "could not load pretrained weights for deit_tiny_distilled_patch16_224.fb_in1k" in errors[0]
    assert "--weights random or --weights PATH" in errors[0]


@pytest.mark.zoo
def test_models_listing(capsys):
    code, out, _ = run_cli(["models", "--format", "json"], capsys)
    assert code == 0
    records = json.loads(out)
    by_key = {r["key"]: r for r in records}
    assert sum(r["paper_38"] for r in records) == 38
    deit = by_key["deit_base_distilled_patch16_384.fb_in1k"]
    assert deit["input_size"] == 384 and len(deit["blocks"]) == 12
    assert deit["blocks"][0]["prefix_tokens"] == 2 and deit["blocks"][0]["widths"]["mlp"] == 3072
    code, out, _ = run_cli(["models", "--family", "swin"], capsys)
    assert code == 0 and "swin_base_patch4_window7_224.ms_in22k" in out and "10 models" in out
    code, _, err = run_cli(["models", "--family", "nope"], capsys)
    assert code == 2 and "unknown family 'nope'" in err


def test_console_script_help():
    for cmd in ([sys.executable, "-m", "sweep", "--help"], [sys.executable, "-m", "sweep", "visualize", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage: sweep" in proc.stdout


def test_feature_listed_twice_is_computed_once(tmp_path, capsys):
    code, _, err = run_cli(["visualize", *MICRO, "--layer", "1", "--feature", "3", "3", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    df = pd.read_parquet(tmp_path / "features")
    assert df["feature"].tolist() == [3] and df["batch_features"].tolist() == [1]
