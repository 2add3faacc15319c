"""Shipped zoo weights (optin.shipped): a written file loads back as the float16-rounded model, a
damaged file or changed settings are refused in one line, OPTIN_ZOO_TRAIN=1 skips them, and the
files in this checkout match today's hyperparameters (a change to VIT_FMNIST or RESNET_FMNIST
without `python -m optin.zoo --ship NAME` fails here, not silently in a benchmark)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from optin import shipped, zoo
from optin.errors import DamagedFile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 3))


def test_round_trip_is_the_float16_rounded_model(tmp_path):
    m = _tiny()
    settings = {"train": {"lr": 1e-3, "sizes": (7, 3)}}
    shipped.write("tiny", m, settings, 12.3, "rebuild it", log=lambda s: None, weights_dir=str(tmp_path))
    sd, info = shipped.load("tiny", settings, "rebuild it", weights_dir=str(tmp_path))
    assert info["train"]["sizes"] == [7, 3] and info["train_seconds"] == 12 and info["rebuild"] == "rebuild it"
    for k, v in m.state_dict().items():
        want = v.half().float() if v.is_floating_point() else v
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], want), k
    assert not torch.equal(sd["0.weight"], m.state_dict()["0.weight"])  # really rounded


def test_damaged_or_changed_weights_are_refused(tmp_path):
    m = _tiny()
    settings = {"train": {"lr": 1e-3}}
    path = shipped.write("tiny", m, settings, 1, "make them again", log=lambda s: None, weights_dir=str(tmp_path))
    with pytest.raises(DamagedFile, match="does not match .*make them again"):
        shipped.load("tiny", {"train": {"lr": 2e-3}}, "make them again", weights_dir=str(tmp_path))
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])  # truncated
    with pytest.raises(DamagedFile, match="digest or settings differ"):
        shipped.load("tiny", settings, "make them again", weights_dir=str(tmp_path))
    with open(str(tmp_path / "tiny.json"), "w") as fh:
        fh.write("{not json")
    with pytest.raises(DamagedFile, match="unreadable"):
        shipped.load("tiny", settings, "make them again", weights_dir=str(tmp_path))


def test_train_env_skips_shipped_weights(tmp_path, monkeypatch):
    shipped.write("tiny", _tiny(), {}, 1, "x", log=lambda s: None, weights_dir=str(tmp_path))
    assert shipped.available("tiny", str(tmp_path)) and not shipped.available("other", str(tmp_path))
    monkeypatch.setenv("OPTIN_ZOO_TRAIN", "1")
    assert not shipped.available("tiny", str(tmp_path))


@pytest.mark.parametrize("name", sorted(zoo.SHIPPED))
def test_checkout_ships_weights_that_match_todays_settings(name):
    if not shipped.available(name):
        pytest.skip(f"optin/zoo_weights/{name}.* are not in this checkout, or OPTIN_ZOO_TRAIN=1")
    hp, make, _ = zoo.SHIPPED[name]
    sd, info = shipped.load(name, {"train": hp}, "-")
    model, _ = make()
    model.load_state_dict(sd, strict=True)  # every tensor, every shape
    assert info["sha256"] == shipped.digest(os.path.join(shipped.WEIGHTS_DIR, f"{name}.safetensors"))


def test_ship_from_a_folder_that_is_not_a_zoo_build_is_one_line(tmp_path):
    (tmp_path / "optin_zoo.json").write_text(json.dumps({"name": "vit-fmnist", "hyperparameters": {"lr": 1}}))
    r = subprocess.run([sys.executable, "-m", "optin.zoo", "--ship", "vit-fmnist", "--from", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "today's hyperparameters" in r.stderr and "Traceback" not in r.stderr
