"""Scoring shared by two torchrun processes (gloo, CPU) gives the single process's mask."""
import json
import subprocess
import sys

import pytest

from test_cli import run_cli

ARGS = ["--flops", "0.5", "--calib", "16", "--group-size", "8", "--max-length", "16", "--no-fvcore"]


@pytest.mark.parametrize("method", ["optin", "optin-est", "optin-fast"])
def test_two_processes_same_mask(tiny_folders, tiny_csv, tmp_path, method):
    model, data = str(tiny_folders["bert"]), str(tiny_csv)
    one = run_cli("prune", model, "--data", data, "--out", str(tmp_path / "one"), "--method", method, *ARGS)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "optin.cli", "prune", model, "--data", data, "--out", str(tmp_path / "two"),
                          "--method", method, *ARGS], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one" / "report.json").read_text())
    r2 = json.loads((tmp_path / "two" / "report.json").read_text())
    assert r1["scoring"]["processes"] == 1 and r2["scoring"]["processes"] == 2
    assert (tmp_path / "one" / "spec.json").read_text() == (tmp_path / "two" / "spec.json").read_text()
    assert r1["kept"] == r2["kept"] and r1["accuracy"] == r2["accuracy"]


def test_two_processes_same_token_schedule(tiny_folders, tmp_path):
    """Token scores are sharded too (ViT, --token-share): the same schedule and mask as one process."""
    from test_vision import _image_folder

    model, data = str(tiny_folders["vit"]), f"imagefolder:{_image_folder(tmp_path / 'images')}"
    args = ["--data", data, "--flops", "0.5", "--token-share", "0.5", "--method", "fisher", "--calib", "8",
            "--no-fvcore"]
    one = run_cli("prune", model, "--out", str(tmp_path / "one"), *args)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "optin.cli", "prune", model, "--out", str(tmp_path / "two"), *args],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    spec = json.loads((tmp_path / "one" / "spec.json").read_text())
    assert spec["tokens"] is not None and len(spec["tokens"][-1]) < len(spec["tokens"][0])
    assert (tmp_path / "one" / "spec.json").read_text() == (tmp_path / "two" / "spec.json").read_text()
