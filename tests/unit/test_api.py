"""The in-memory API (optin.prune_model and the facade in optin/__init__): the README's example
runs as written; every accepted calibration form gives the same mask; nothing is written unless
asked; the CLI is a shell over it (same spec)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import WORDS, tiny_batches, tiny_model, write_tiny_folder

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def _readme_example() -> str:
    text = open(README).read()
    block = re.search(r"### In Python.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no Python example under '### In Python'"
    return block.group(1)


def test_readme_example_runs_as_written(tmp_path):
    model_dir = write_tiny_folder(tmp_path / "model", "bert", vocab_words=True)
    code = _readme_example().replace('"path/to/your/fine-tuned/classifier"', repr(str(model_dir)))
    assert code != _readme_example()
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    first = r.stdout.splitlines()[0].split()
    assert float(first[0]) <= 0.5 + 1e-9  # the MAC ratio the budget allows
    rep = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert rep["reconstruction"] and (tmp_path / "pruned" / "model.onnx").exists()
    assert (tmp_path / "pruned" / "profile.json").exists() and r.stdout.splitlines()[-1] in ("True", "False")


def _texts(n=48, seed=0):
    import random

    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))), rng.randrange(3)) for _ in range(n)]


def test_calibration_forms_agree_and_nothing_is_written(tmp_path, monkeypatch):
    import optin
    from optin.data import make_batches
    from transformers import AutoTokenizer

    model_dir = write_tiny_folder(tmp_path / "model", "bert", vocab_words=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = _texts()
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    cfg = optin.PruneConfig(calib=48, fvcore=False, max_length=16)
    specs = []
    for calib in (examples, make_batches(tok, [(t, None, y) for t, y in examples], 16, 16)):
        model = tiny_model("bert")
        res = optin.prune_model(model, calib, flops=0.5, method="fisher", processor=tok, config=cfg)
        specs.append(res.spec)
        assert res.model is model and res.report["accuracy"] is None  # no evaluation data given
        assert res.report["macs"]["ratio"] <= 0.5 + 1e-9
    assert specs[0] == specs[1]
    assert set(os.listdir(tmp_path)) == before  # nothing written
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": [t for t, _ in examples], "label": [y for _, y in examples]})
    res = optin.prune_model(tiny_model("bert"), ds, flops=0.5, method="fisher", processor=tok, config=cfg)
    assert res.spec == specs[0]


def test_string_labels_and_unlabelled_examples(tmp_path):
    import optin
    from optin.errors import BadData
    from transformers import AutoTokenizer

    model_dir = write_tiny_folder(tmp_path / "model", "bert", vocab_words=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = tiny_model("bert")
    model.config.id2label, model.config.label2id = {0: "neg", 1: "neu", 2: "pos"}, {"neg": 0, "neu": 1, "pos": 2}
    named = [(t, ["NEG", "Neu", "pos"][y]) for t, y in _texts(32)]
    cfg = optin.PruneConfig(calib=32, fvcore=False, max_length=16)
    res = optin.prune_model(model, named, flops=0.6, processor=tok, eval_data=named, config=cfg)
    assert 0 <= res.report["accuracy"]["pruned"] <= 1
    # optin-est and optin-fast need no labels; Fisher says so in one line
    bare = [t for t, _ in named]
    optin.prune_model(tiny_model("bert"), bare, flops=0.6, processor=tok, config=cfg)
    optin.prune_model(tiny_model("bert"), bare, flops=0.6, method="optin-fast", processor=tok, config=cfg)
    with pytest.raises(BadData, match="needs labelled calibration data"):
        optin.prune_model(tiny_model("bert"), bare, flops=0.6, method="fisher", processor=tok, config=cfg)


def test_image_model_from_a_list_of_images():
    import numpy as np

    import optin

    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 255, (12, 12), dtype=np.uint8), int(rng.integers(0, 3))) for _ in range(24)]
    res = optin.prune_model(tiny_model("vit"), images, flops=0.6,
                            config=optin.PruneConfig(calib=24, fvcore=False, recon=optin.ReconConfig(calib=24)))
    assert res.report["macs"]["ratio"] <= 0.6 + 1e-9 and res.report["reconstruction"]["examples"] == 24
    out = res.model(**{k: v for k, v in tiny_batches(model_type="vit")[0].items() if k != "labels"}).logits
    assert torch.isfinite(out).all()


def test_cli_is_a_shell_over_prune_model(tmp_path):
    """`optin prune` (its library function, in this process: the same threads, the same rounding)
    on a folder and a CSV gives the spec and accuracy prune_model gives on the same batches."""
    import optin
    from conftest import write_tiny_csv
    from optin.prune import PruneConfig, prepare, prune

    model_dir = write_tiny_folder(tmp_path / "model", "bert", vocab_words=True)
    csv = write_tiny_csv(tmp_path / "data.csv")
    cfg = PruneConfig(flops=0.5, calib=16, max_length=16, fvcore=False)
    rep = prune(str(model_dir), str(csv), str(tmp_path / "out"), cfg, log=lambda *_: None)
    prep = prepare(str(model_dir), str(csv), cfg, log=lambda *_: None)
    torch.manual_seed(cfg.seed)
    res = optin.prune_model(prep.model, prep.calib, config=cfg, processor=prep.tok, eval_data=prep.test,
                            recon_data=prep.recon)
    assert res.spec.to_json() == (tmp_path / "out" / "spec.json").read_text()
    assert res.report["accuracy"] == rep["accuracy"]
