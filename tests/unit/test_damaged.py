"""Damaged files (truncated, garbage, not the format they claim) give exit 2, exactly one line on
stderr naming the file and the fix, and write nothing: through the CLI's main() with stderr
captured at the file-descriptor level (and once as a subprocess, the console entry itself)."""
import json
import os
import random
import re
import shutil
import subprocess
import sys

import pytest

from optin.errors import DamagedFile


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def garbage(path):
    path.write_bytes(random.Random(str(path)).randbytes(3000))


def chop_tail(path):
    """The last few bytes gone: a download or copy that stopped early, mid-record."""
    path.write_bytes(path.read_bytes()[:-5])


def not_a_spec(path):
    path.write_text('{"heads": 3}')


def cli(capfd, *args):
    """main(args) → (exit code, stderr lines); stdout and stderr of earlier steps are dropped first."""
    from optin.cli import main

    capfd.readouterr()
    rc = main([str(a) for a in args])
    return rc, capfd.readouterr().err.splitlines()


def _listing(folder):
    return sorted((p, os.path.getmtime(os.path.join(folder, p))) for p in os.listdir(folder))


@pytest.fixture(scope="module")
def pruned(tiny_folders, tmp_path_factory):
    """A pruned tiny BERT folder with its model.onnx, written by the library itself."""
    from conftest import awkward_spec

    from export.onnx import export_onnx
    from optin.adapters import adapter_for
    from optin.io import load_model, save_pruned
    from optin.narrow import narrow

    model, tok = load_model(str(tiny_folders["bert"]))
    spec = awkward_spec("bert")
    narrow(adapter_for(model), spec)
    out = tmp_path_factory.mktemp("pruned") / "p"
    save_pruned(model, tok, spec, str(out), extra={"seq_len": 16, "max_length": 16, "data": None})
    export_onnx(str(out), samples=8, log=lambda *_: None)
    return out


def _bin_folder(src, dst):
    """The same model saved as pytorch_model.bin (torch.save's zip format) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    torch.save(load_file(str(dst / "model.safetensors")), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


@pytest.mark.parametrize("name,damage", [
    ("model.safetensors", truncate), ("model.safetensors", garbage), ("pytorch_model.bin", truncate),
    ("tokenizer.json", truncate), ("tokenizer.json", garbage), ("config.json", truncate)],
    ids=lambda v: getattr(v, "__name__", v))
def test_damaged_model_folder(tiny_folders, tiny_csv, tmp_path, capfd, name, damage):
    model = tmp_path / "model"
    if name == "pytorch_model.bin":
        _bin_folder(tiny_folders["bert"], model)
    else:
        shutil.copytree(tiny_folders["bert"], model)
    damage(model / name)
    out = tmp_path / "out"
    rc, err = cli(capfd, "prune", model, "--data", tiny_csv, "--out", out, "--no-fvcore", "--calib", "8")
    assert rc == 2 and len(err) == 1, err
    assert f"{model / name} is damaged" in err[0] and "restore it from the original model" in err[0]
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".out")]


def test_the_console_entry_point(tiny_folders, tiny_csv, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_folders["bert"], model)
    truncate(model / "model.safetensors")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(model), "--data", str(tiny_csv), "--out",
                        str(out), "--no-fvcore"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"optin prune: error: {model / 'model.safetensors'} is damaged (not a complete "
                               "safetensors file") and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("name,damage,command", [
    ("spec.json", truncate, "export"), ("spec.json", garbage, "export"), ("spec.json", not_a_spec, "export"),
    ("model.safetensors", truncate, "export"), ("tokenizer.json", garbage, "export"), ("optin.json", garbage, "export"),
    ("model.onnx", truncate, "engine"), ("model.onnx", garbage, "engine"), ("model.onnx", truncate, "profile")],
    ids=lambda v: getattr(v, "__name__", v))
def test_damaged_pruned_folder(pruned, tmp_path, capfd, name, damage, command):
    folder = tmp_path / "p"
    shutil.copytree(pruned, folder)
    damage(folder / name)
    before = _listing(folder)
    args = {"export": ["--samples", "8"], "engine": ["--backend", "onnxruntime"],
            "profile": ["--iters", "10", "--warmup", "1", "--batch", "2", "--seq", "8"]}[command]
    rc, err = cli(capfd, command, folder, *args)
    assert rc == 2 and len(err) == 1, err
    fix = f"optin export {folder}" if name == "model.onnx" else "run `optin prune` again"
    assert f"{folder / name} is damaged" in err[0] and fix in err[0], err[0]
    assert _listing(folder) == before  # nothing written: no engine/, engine.json, profile.json, export.json


def test_damaged_reports_name_the_command_that_rewrites_them(pruned, tmp_path, capfd):
    from optin.io import read_json

    folder = tmp_path / "p"
    shutil.copytree(pruned, folder)
    (folder / "engine").mkdir()
    for rel, cmd in (("engine.json", "optin engine"), ("engine/manifest.json", "optin engine"),
                     ("export.json", "optin export"), ("profile.json", "optin profile")):
        garbage(folder / rel)
        with pytest.raises(DamagedFile, match=re.escape(f"run `{cmd} {folder}` again")):
            read_json(str(folder / rel))
    rc, err = cli(capfd, "gate", folder, "--min-speedup", "1.0")
    assert rc == 2 and len(err) == 1 and f"{folder / 'profile.json'} is damaged" in err[0], err


def test_damaged_data_files(tiny_folders, tmp_path, capfd):
    from conftest import write_tiny_csv

    for name, damage in (("d.csv", garbage), ("d.jsonl", chop_tail)):
        f = tmp_path / name
        if name.endswith(".csv"):
            write_tiny_csv(f)
        else:
            f.write_text("\n".join(json.dumps({"text": "good film", "label": i % 3}) for i in range(20)))
        damage(f)
        out = tmp_path / "out"
        rc, err = cli(capfd, "prune", tiny_folders["bert"], "--data", f, "--out", out, "--no-fvcore")
        lines = [ln for ln in err if ln.startswith("optin")]  # the weights' progress bar comes first
        assert rc == 2 and len(lines) == 1 and f"cannot read {f}" in lines[0], err
        assert not out.exists()


def test_damaged_timm_checkpoint(tmp_path):
    """timm:NAME:CHECKPOINT reads a local state dict (.pth or .safetensors) before timm is needed."""
    import torch
    from safetensors.torch import save_file

    from optin.zoo import _load_checkpoint

    sd = {"head.weight": torch.randn(3, 4)}
    torch.save(sd, tmp_path / "ok.pth")
    save_file(sd, str(tmp_path / "ok.safetensors"))
    for name in ("ok.pth", "ok.safetensors"):
        assert torch.equal(_load_checkpoint(str(tmp_path / name))["head.weight"], sd["head.weight"])
        truncate(tmp_path / name)
        with pytest.raises(DamagedFile, match=f"{name} is damaged .*give a whole checkpoint"):
            _load_checkpoint(str(tmp_path / name))


def test_damaged_fashion_mnist_and_image_processor(tmp_path):
    from transformers import ViTConfig

    from optin.errors import BadData
    from optin.images import ImageProcessor, fashion_mnist

    for p in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            garbage(tmp_path / f"{p}-{kind}-ubyte.gz")
    with pytest.raises(BadData, match="train-images-idx3-ubyte.gz is damaged .*apt-get install --reinstall"):
        fashion_mnist(str(tmp_path))
    truncate_me = tmp_path / "preprocessor_config.json"
    ImageProcessor(12, 1).save_pretrained(str(tmp_path))
    truncate(truncate_me)
    with pytest.raises(DamagedFile, match="preprocessor_config.json is damaged"):
        ImageProcessor.for_model(ViTConfig(image_size=12, num_channels=1), str(tmp_path))
