"""Pruned folders load with plain transformers: `AutoModelFor….from_pretrained(DIR,
trust_remote_code=True)` in a Python that cannot import optin gives the narrowed model, with
logits equal to optin.load_pruned's.

Every registered family (a new one is covered without a list to edit) and the ResNet bottleneck,
narrowed non-uniformly: a layer with no heads, one with no neurons (a bottleneck: one run of two
emptied), tokens dropped where the family reduces tokens. The Python without optin is a venv whose
one .pth file lists this interpreter's site-packages: torch and transformers import, but the
editable install's .pth there is not processed (only a real site directory's are). It starts
slowly, so one child loads every folder (_load_without_optin.py) and each case checks its result."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import awkward_spec, families, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.io import load_pruned, save_pruned
from optin.narrow import narrow
from optin.remote_code import family_source
from optin.spec import PruneSpec

EXTRA = ("resnet-bottleneck",)  # variants of a family whose remote code differs from its tiny default
CHILD = Path(__file__).with_name("_load_without_optin.py")


def _model(case: str):
    return tiny_model("resnet", layer_type="bottleneck") if case == "resnet-bottleneck" else tiny_model(case)


def _neurons(adapter, i: int) -> tuple[int, ...]:
    """Layer 0: every other unit; layer 1: the first half (a bottleneck's second run emptied);
    layer 2: none, or where a layer has two runs the last quarter (its first run emptied)."""
    widths = adapter.run_widths(i)
    w = sum(widths)
    keep = ((lambda n: n % 2 == 0), (lambda n: n < w // 2),
            (lambda n: len(widths) > 1 and n >= 3 * w // 4))[i]
    return tuple(n for n in range(w) if keep(n))


def _tokens(adapter):
    """Nested token sets that shrink with depth (the last patch dropped before block 0), special tokens kept."""
    n, s = adapter.seq_len(None), adapter.special_tokens
    t0 = [p for p in range(n - 1)]
    t1 = [p for p in t0 if p < s or p % 3]
    t2 = [p for p in t1 if p < s or p % 3 == 1]
    return (tuple(t0), tuple(t1), tuple(t2))


def _spec(model) -> PruneSpec:
    a, d = adapter_for(model), adapter_for(model).dims()
    heads = awkward_spec(model.config.model_type).heads  # (0, 2), none, (1, 2, 3) where present; CNNs: none
    return PruneSpec(model.config.model_type, d.num_heads, d.ffn_size, heads, tuple(_neurons(a, i) for i in range(3)),
                     _tokens(a) if a.token_reduction else None, d.layer_heads, d.layer_ffn)


def _python_without_optin(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    py = root / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=_clean_env()).stdout.strip()
    Path(purelib, "parent_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return py


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **extra}


def _prepare(case: str, root: Path) -> dict:
    """Narrow and save one case; its reference logits from load_pruned, its inputs for the child."""
    model = _model(case)
    adapter = adapter_for(model)
    assert family_source(adapter), (f"{case}: no remote code; add optin/remote/modeling_optin_"
                                    f"{type(adapter).__module__.rsplit('.', 1)[-1]}.py with Optin{type(model).__name__}")
    spec = _spec(model)
    narrow(adapter, spec)
    folder = root / case
    save_pruned(model, None, spec, str(folder))
    batch = {k: v for k, v in tiny_batches(model_type=model.config.model_type)[0].items() if k != "labels"}
    with torch.no_grad():
        ref = load_pruned(str(folder))(**batch).logits
        assert (model(**batch).logits - ref).abs().max() <= 1e-5  # load_pruned is the reference
    save_file(batch, str(root / f"{case}.inputs.safetensors"))
    auto = f"AutoModel{adapter.task_suffix}"  # AutoModelForSequenceClassification, ...ForImageClassification, ...
    return {"folder": str(folder), "auto": auto, "inputs": str(root / f"{case}.inputs.safetensors"),
            "logits": str(root / f"{case}.logits.safetensors"), "ref": ref, "spec": spec}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every installed case saved, then loaded in one child without optin: (cases, child results)."""
    root = tmp_path_factory.mktemp("remote")
    cases, failed = {}, {}
    for case in [*families(installed=True), *EXTRA]:
        try:
            cases[case] = _prepare(case, root / "folders")
        except Exception as e:  # reported by that case's test, not by every case's
            failed[case] = e
    py = _python_without_optin(root / "venv")
    (root / "cwd").mkdir()
    todo = {k: {f: v[f] for f in ("folder", "auto", "inputs", "logits")} for k, v in cases.items()}
    (root / "cases.json").write_text(json.dumps(todo))
    run = subprocess.run([str(py), str(CHILD), str(root / "cases.json"), str(root / "results.json")],
                         cwd=root / "cwd", env=_clean_env(HF_MODULES_CACHE=str(root / "modules")),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return cases, failed, json.loads((root / "results.json").read_text())


@pytest.mark.parametrize("case", [*families(), *EXTRA])
def test_pruned_folder_loads_without_optin(case, loaded):
    cases, failed, results = loaded
    if case in failed:
        raise failed[case]
    assert not results["optin_importable"], "the child Python imports optin: the test would prove nothing"
    got = results["cases"][case]
    assert "error" not in got, got["error"]
    assert got["class"].startswith("transformers_modules.") and ".Optin" in got["class"], got["class"]
    assert not any(got["loading"].values()), got["loading"]  # strict: no missing, unexpected or mismatched keys
    logits = load_file(cases[case]["logits"])["logits"]
    ref = cases[case]["ref"]
    assert logits.shape == ref.shape and (logits - ref).abs().max() <= 1e-5


def test_config_keeps_the_dense_fields(loaded):
    """config.json keeps the dense model's fields (load_pruned and older readers rely on them) and
    adds the widths: a layer with no heads, one with no neurons, the token sets where reduced."""
    cases, _, _ = loaded
    for case, c in cases.items():
        cfg = json.loads(Path(c["folder"], "config.json").read_text())
        dense = json.loads(json.dumps(_model(case).config.to_dict()))  # as JSON has it (string keys)
        assert all(cfg[k] == v for k, v in dense.items() if k not in ("architectures", "transformers_version")), case
        w, spec = cfg["optin_narrowed"], c["spec"]
        assert w["heads"] == spec.kept_heads and [sum(r) for r in w["runs"]] == spec.kept_neurons, case
        assert w["tokens"] == (None if spec.tokens is None else [list(t) for t in spec.tokens]), case
