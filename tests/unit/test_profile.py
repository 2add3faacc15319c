"""Latency measurement on tiny models with real ONNX Runtime sessions: the profile.json contract,
interleaving, statistics and MAC-implied speedup."""
import json
import subprocess
import sys

import pytest

from conftest import tiny_model, write_tiny_csv, write_tiny_folder
from optin.adapters import adapter_for
from optin.errors import BadInput
from optin.io import save_pruned
from optin.narrow import narrow
from optin.prune import cost_model_for
from optin.spec import PruneSpec

PROFILE_KEYS = {"backend", "batch", "seq", "latency_ms", "throughput", "cv", "providers", "versions"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "optin.cli", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A dense tiny BERT folder and a pruned one made from it (tokenizer + CSV data)."""
    from transformers import AutoTokenizer

    from optin.io import load_model

    root = tmp_path_factory.mktemp("profile")
    dense = write_tiny_folder(root / "dense", "bert")
    model, tok = load_model(str(dense))
    spec = PruneSpec("bert", 4, 48, ((0, 2), (), (1, 2, 3)), (tuple(range(0, 48, 2)), tuple(range(10)), ()))
    narrow(adapter_for(model), spec)
    pruned = root / "pruned"
    save_pruned(model, AutoTokenizer.from_pretrained(dense), spec, str(pruned),
                extra={"seq_len": 12, "max_length": 12, "source": str(dense), "data": str(write_tiny_csv(root / "d.csv"))})
    return dense, pruned


def test_profile_cli_contract_and_gate(folders):
    dense, pruned = folders
    r = run_cli("profile", str(pruned), "--against", str(dense), "--batch", "2", "--seq", "12", "--iters", "12",
                "--warmup", "2", "--sweep-batch", "1,3", "--sweep-seq", "8", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("optin profile: onnxruntime (CPUExecutionProvider) b2×s12")
    prof = json.loads((pruned / "profile.json").read_text())
    assert PROFILE_KEYS <= set(prof) and prof["backend"] == "onnxruntime" and (prof["batch"], prof["seq"]) == (2, 12)
    assert {"median", "p90", "p99"} <= set(prof["latency_ms"]) and prof["latency_ms"]["median"] > 0
    assert prof["providers"] == ["CPUExecutionProvider"] and prof["throughput"] > 0
    sp = prof["speedup"]
    assert sp["measured"] > 0 and sp["flop_efficiency"] == pytest.approx(sp["measured"] / sp["mac_implied"])
    cm = cost_model_for(adapter_for(tiny_model("bert")), 12)
    assert sp["mac_implied"] == pytest.approx(cm.total([4] * 3, [48] * 3) / cm.total([2, 0, 3], [24, 10, 0]))
    assert [(p["batch"], p["seq"]) for p in prof["sweep"]] == [(1, 12), (3, 12), (2, 8)]
    assert all("speedup" in p for p in prof["sweep"])
    assert (pruned / "profile.png").stat().st_size > 1000
    assert json.loads((pruned / "dense" / "export.json").read_text())["source"] == str(dense)

    ok = run_cli("gate", str(pruned), "--min-speedup", "0.01")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith("optin gate: PASS")
    miss = run_cli("gate", str(pruned), "--min-speedup", "1000")
    assert miss.returncode == 1 and "optin gate: FAIL" in miss.stdout


def test_measure_torch_and_onnxruntime(folders):
    from export.engines import EngineConfig
    from export.samples import fixed_inputs, load
    from profiling.latency import compare, measure, open_runner

    dense, pruned = folders
    loaded = load(str(pruned), log=lambda s: None)
    inputs, source = fixed_inputs(loaded, 3, 10)
    assert "real tokens" in source and inputs["input_ids"].shape == (3, 10) and inputs["attention_mask"].all()
    torch_r = open_runner("torch", str(pruned), EngineConfig(), loaded)
    m = measure(torch_r, inputs, iters=10, warmup=1)
    assert m["iters"] == 10 and m["latency_ms"]["p99"] >= m["latency_ms"]["median"] > 0
    ort_r = open_runner("onnxruntime", str(pruned), EngineConfig(threads=1), log=lambda s: None)
    c = compare(torch_r, ort_r, inputs, iters=10, warmup=1)
    assert c["speedup"] == pytest.approx(c["a"]["latency_ms"]["median"] / c["b"]["latency_ms"]["median"])


def test_compare_alternates_order():
    from profiling.latency import compare

    order = []

    class Recorder:  # a runner that only notes when it ran
        def __init__(self, name):
            self.name = name

        def bind(self, inputs):
            pass

        def run(self):
            order.append(self.name)

    import torch

    compare(Recorder("a"), Recorder("b"), {"input_ids": torch.zeros(2, 4)}, iters=4, warmup=0)
    assert "".join(order) == "abbaabba"


def test_stats_and_warning():
    from profiling.latency import stats

    s = stats([0.010] * 9 + [0.030], batch=4)
    assert s["latency_ms"]["median"] == pytest.approx(10.0) and s["throughput"] == pytest.approx(400.0)
    assert s["cv"] > 0.1 and s["unstable"]
    assert not stats([0.010, 0.0101, 0.0099], batch=1)["unstable"]


def test_profile_bad_input(folders, tmp_path):
    from profiling.latency import ProfileConfig, profile

    _, pruned = folders
    with pytest.raises(BadInput, match="--iters must be >= 10"):
        profile(str(pruned), ProfileConfig(iters=3))
    with pytest.raises(BadInput, match="unknown backend"):
        profile(str(pruned), ProfileConfig(backend="openvino"))
    with pytest.raises(BadInput, match="not a model folder"):
        profile(str(tmp_path / "nope"), ProfileConfig())
