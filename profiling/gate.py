"""The CI gate: does DIR meet its targets? → gate.json + JUnit XML.

Speed gates read DIR/profile.json and are on ratios measured interleaved in one process
(speedup over dense float32, and the speedup over the MAC-implied one), never on absolute
milliseconds from a shared machine. The accuracy gate reads DIR/engine.json: the engine's test
accuracy against the dense model's, in points (export.accuracy). A result is pass or fail;
anything that prevents judging (no profile or engine report, no threshold, a profile made
without --against, an engine never evaluated on the task) is an error (BadInput), which the CLI
turns into exit code 2.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from optin.errors import BadInput

# name: (report file, minimum or maximum, what it measures)
CHECKS = {"min_speedup": ("profile.json", "min", "speedup over dense"),
          "min_flop_efficiency": ("profile.json", "min", "measured / MAC-implied speedup"),
          "max_accuracy_drop": ("engine.json", "max", "accuracy drop vs dense (points)")}


def _value(name: str, rep: dict, path: str) -> float:
    if name == "max_accuracy_drop":
        acc = rep.get("accuracy") or {}
        if not acc.get("available"):
            raise BadInput(f"{path} has no task accuracy ({acc.get('reason', 'built before engines were evaluated')}); "
                           "rebuild the engine with data to evaluate on")
        if acc.get("drop_vs_dense_points") is None:
            raise BadInput(f"{path}: the dense model's accuracy is unknown ({acc.get('dense_source')}), so there is "
                           "no drop to gate on")
        return float(acc["drop_vs_dense_points"])
    if "speedup" not in rep:
        raise BadInput(f"{path} has no speedup: it was profiled without --against DENSE, so there is nothing to gate on")
    if name == "min_speedup":
        return float(rep["speedup"]["measured"])
    # pruning's efficiency: against the dense model at the same precision where there is one, so
    # that quantisation does not pass for pruning that kept its promise
    return float((rep.get("same_precision") or rep)["speedup"]["flop_efficiency"])


def gate(model_dir: str, min_speedup: float | None = None, min_flop_efficiency: float | None = None,
         junit: str | None = None, max_accuracy_drop: float | None = None, log=print) -> dict:
    from optin.io import read_json, write_json

    limits = {k: v for k, v in (("min_speedup", min_speedup), ("min_flop_efficiency", min_flop_efficiency),
                                ("max_accuracy_drop", max_accuracy_drop)) if v is not None}
    if not limits:
        raise BadInput("give a target: --min-speedup X, --min-flop-efficiency E and/or --max-accuracy-drop P")
    reports = {}
    for f in {CHECKS[k][0] for k in limits}:
        reports[f] = read_json(os.path.join(model_dir, f))
        if reports[f] is None:
            cmd = "profile {d} --against DENSE" if f == "profile.json" else "engine {d} --backend BACKEND"
            raise BadInput(f"{os.path.join(model_dir, f)} does not exist; run `optin {cmd.format(d=model_dir)}` first")
    checks = []
    for name, threshold in limits.items():
        f, kind, what = CHECKS[name]
        value = _value(name, reports[f], os.path.join(model_dir, f))
        checks.append({"name": name, "what": what, "value": value, "threshold": float(threshold), "kind": kind,
                       "passed": value >= threshold if kind == "min" else value <= threshold})
    prof, eng = reports.get("profile.json") or {}, reports.get("engine.json") or {}
    reasons = [_line(c) for c in checks if not c["passed"]]
    result = {"command": "gate", "passed": not reasons, "checks": checks, "reasons": reasons,
              "profile": {k: prof.get(k) for k in ("backend", "batch", "seq", "cv", "providers", "precision")}
              if prof else {"backend": eng.get("backend")},
              "warnings": prof.get("warnings", [])}
    if eng:
        acc = eng.get("accuracy") or {}
        result["engine"] = {"backend": eng.get("backend"), "precision": eng.get("precision"),
                            **{k: acc.get(k) for k in ("engine", "torch", "dense", "n", "ci95")}}
    write_json(os.path.join(model_dir, "gate.json"), result)
    junit = junit or os.path.join(model_dir, "gate.xml")
    write_junit(result, junit)
    result["junit"] = junit
    log(summary(result))
    return result


def _line(c: dict) -> str:
    op = "<" if c.get("kind", "min") == "min" else ">"
    return f"{c['what']} {c['value']:.3f} {op} {c['threshold']:.3f}"


def write_junit(result: dict, path: str) -> None:
    """One <testcase> per threshold; a missed one carries a <failure>, which CI systems display."""
    checks = result["checks"]
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="optin.gate", tests=str(len(checks)),
                          failures=str(sum(not c["passed"] for c in checks)), errors="0")
    prof = result["profile"]
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"optin.gate.{prof.get('backend')}", name=c["name"], time="0")
        if not c["passed"]:
            msg = _line(c)
            ET.SubElement(case, "failure", message=msg, type="GateFailure").text = (
                f"{msg} (backend {prof.get('backend')}, batch {prof.get('batch')}, seq {prof.get('seq')})")
    if result["warnings"]:
        ET.SubElement(suite, "system-out").text = "\n".join(result["warnings"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    ET.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def summary(r: dict) -> str:
    def op(c):
        if c.get("kind", "min") == "min":
            return ">=" if c["passed"] else "<"
        return "<=" if c["passed"] else ">"

    parts = ", ".join(f"{c['what']} {c['value']:.2f} {op(c)} {c['threshold']:.2f}" for c in r["checks"])
    return f"optin gate: {'PASS' if r['passed'] else 'FAIL'}: {parts}"
