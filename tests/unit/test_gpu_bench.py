"""bench/gpu.py --smoke on the CPU, as the GPU machine would run it: with matplotlib made
unimportable (that machine has PyTorch, transformers, onnx and onnxruntime only), it must still
score with every method, narrow to every budget, time every batch and write its JSON and a plot
(SVG without matplotlib)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_bench_smoke_without_optional_packages(tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("matplotlib",):  # tqdm stays: transformers (huggingface_hub) requires it
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), ROOT])}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["smoke"] and res["machine"]["device"] == "cpu" and res["machine"]["torch"]
    from optin.prune import PruneConfig

    for model in ("bert-base", "deit-s"):
        rows = {s["method"]: s for s in res["scoring"] if s["model"] == model}
        assert set(rows) == {"fisher", "fisher-batch", PruneConfig().method, "optin-heads"}
        assert all(s["seconds"] > 0 for s in rows.values()) and rows[PruneConfig().method]["default"]
        lat = [x for x in res["latency"] if x["model"] == model]
        assert {(x["budget"], x["batch"]) for x in lat} == {(b, n) for b in res["settings"]["budgets"]
                                                            for n in res["settings"]["batches"]}
        for x in lat:  # the search kept the budget, and both models ran
            assert "error" not in x, x["error"]
            assert x["mac_ratio"] <= x["budget"] + 1e-9 and x["dense_ms"] > 0 and x["pruned_ms"] > 0
    assert res["plot"].endswith(".svg") and os.path.getsize(res["plot"]) > 200
