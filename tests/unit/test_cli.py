"""`optin prune` from the command line on tiny folders: success, report contract, bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import write_tiny_csv

REPORT_KEYS = {"budget", "macs", "accuracy", "kept", "seconds", "seed", "versions"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "optin.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method,refit", [("optin", False), ("fisher", True)])
def test_prune_writes_contract_and_reloads(tiny_folders, tiny_csv, tmp_path, method, refit):
    out = tmp_path / "out"
    r = run_cli("prune", str(tiny_folders["bert"]), "--data", str(tiny_csv), "--flops", "0.5",
                "--out", str(out), "--method", method, "--calib", "16", "--group-size", "8", "--max-length", "16",
                *([] if refit else ["--no-reconstruct"]), "--recon-calib", "24")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(rep)
    m = rep["macs"]
    assert m["pruned"] <= 0.5 * m["dense"] and {"fvcore_dense", "fvcore_pruned"} <= set(m)
    assert 0 <= rep["accuracy"]["dense"] <= 1 and 0 <= rep["accuracy"]["pruned"] <= 1
    assert len(rep["kept"]["heads"]) == 3 and len(rep["kept"]["neurons"]) == 3
    assert {"scoring", "search", "total"} <= set(rep["seconds"])
    assert (out / "kept_widths.png").stat().st_size > 1000

    from optin import PruneSpec, load_pruned
    from optin.adapters import adapter_for
    from optin.io import load_model
    from optin.masking import mask_hooks

    spec = PruneSpec.from_json((out / "spec.json").read_text())
    assert spec.kept_heads == rep["kept"]["heads"]
    pruned = load_pruned(str(out))
    dense, tok = load_model(str(tiny_folders["bert"]))
    enc = dict(tok(["good film", "the plot was not very funny at all"], padding=True, return_tensors="pt"))
    with mask_hooks(adapter_for(dense)) as state:
        state.set(*spec.masks())
        masked = dense(**enc).logits
    gap = (pruned(**enc).logits - masked).abs().max()
    if not refit:  # narrowing alone is exactly the mask
        assert gap <= 1e-5 and rep["reconstruction"] is None
        return
    # re-fit: other weights, the same shapes; the report says what it did, on how many examples
    assert gap > 1e-4 and set(rep["kept"]["heads"]) == set(spec.kept_heads)
    rc = rep["reconstruction"]
    assert rc["examples"] == 16 and rc["damp"] == 0.01  # a file's calibration part is --calib long and 0 <= rc["accuracy_before"] <= 1
    assert all(s["after"] <= s["before"] + 1e-9 for block in rc["layers"] for s in block)
    assert rep["seconds"]["reconstruction"] > 0 and (out / "reconstruction.png").stat().st_size > 1000


def _bad_cases(tiny_folders, tmp_path):
    gpt = tmp_path / "gpt2"
    from transformers import GPT2Config, GPT2ForSequenceClassification

    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(gpt)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("words,label\na,1\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    wrong = write_tiny_csv(tmp_path / "wrong.csv", labels=7)
    bert = str(tiny_folders["bert"])
    good = str(write_tiny_csv(tmp_path / "good.csv"))
    return {
        "budget": ([bert, "--data", good, "--flops", "1.5"], "--flops must be in (0, 1]"),
        "budget0": ([bert, "--data", good, "--flops", "0"], "--flops must be in (0, 1]"),
        "missing model": ([str(tmp_path / "nope"), "--data", good], "does not exist"),
        "not a model": ([str(tmp_path), "--data", good], "no config.json"),
        "architecture": ([str(gpt), "--data", good], "not supported; supported: bert"),
        "columns": ([bert, "--data", str(nocol)], "no text column"),
        "labels": ([bert, "--data", str(wrong)], "outside the model's 3 classes"),
        "empty": ([bert, "--data", str(empty)], "empty"),
        "method": ([bert, "--data", good, "--method", "bogus"], "unknown importance method"),
        "select": ([bert, "--data", good, "--select", "iterative", "--latency-target", "2"],
                   "--select iterative cannot be combined with --latency-target"),
        "split": ([bert, "--data", good, "--select", "refit-split", "--no-reconstruct"],
                  "--select refit-split chooses by the re-fit model"),
    }


def test_bad_input_one_line_exit_2_no_output(tiny_folders, tmp_path):
    for name, (args, msg) in _bad_cases(tiny_folders, tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        r = run_cli("prune", *args, "--out", str(out), "--no-fvcore", "--calib", "8")
        assert r.returncode == 2, (name, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]
        assert len(lines) == 1 and msg in lines[0], (name, r.stderr)
        assert not out.exists(), name
        assert not [p for p in os.listdir(tmp_path) if p.startswith(f".out-{name}")], name
