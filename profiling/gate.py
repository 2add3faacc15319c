"""The CI gate: does DIR/profile.json meet the speed targets? → gate.json + JUnit XML.

Gates are on ratios measured interleaved in one process (speedup over dense, and that speedup
over the MAC-implied one), never on absolute milliseconds from a shared machine. A result is
pass or fail; anything that prevents judging (no profile, no threshold, a profile made
without --against) is an error (BadInput), which the CLI turns into exit code 2.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from optin.errors import BadInput

CHECKS = {"min_speedup": ("measured", "speedup over dense"),
          "min_flop_efficiency": ("flop_efficiency", "measured / MAC-implied speedup")}


def gate(model_dir: str, min_speedup: float | None = None, min_flop_efficiency: float | None = None,
         junit: str | None = None, log=print) -> dict:
    from optin.io import read_json, write_json

    limits = {k: v for k, v in (("min_speedup", min_speedup), ("min_flop_efficiency", min_flop_efficiency))
              if v is not None}
    if not limits:
        raise BadInput("give a target: --min-speedup X and/or --min-flop-efficiency E")
    path = os.path.join(model_dir, "profile.json")
    prof = read_json(path)
    if prof is None:
        raise BadInput(f"{path} does not exist; run `optin profile {model_dir} --against DENSE` first")
    if "speedup" not in prof:
        raise BadInput(f"{path} has no speedup: it was profiled without --against DENSE, so there is nothing to gate on")
    checks = []
    for name, threshold in limits.items():
        key, what = CHECKS[name]
        value = float(prof["speedup"][key])
        checks.append({"name": name, "what": what, "value": value, "threshold": float(threshold),
                       "passed": value >= threshold})
    reasons = [f"{c['what']} {c['value']:.3f} < {c['threshold']:.3f}" for c in checks if not c["passed"]]
    result = {"command": "gate", "passed": not reasons, "checks": checks, "reasons": reasons,
              "profile": {k: prof.get(k) for k in ("backend", "batch", "seq", "cv", "providers")},
              "warnings": prof.get("warnings", [])}
    write_json(os.path.join(model_dir, "gate.json"), result)
    junit = junit or os.path.join(model_dir, "gate.xml")
    write_junit(result, junit)
    result["junit"] = junit
    log(summary(result))
    return result


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
            msg = f"{c['what']} {c['value']:.3f} < {c['threshold']:.3f}"
            ET.SubElement(case, "failure", message=msg, type="GateFailure").text = (
                f"{msg} (backend {prof.get('backend')}, batch {prof.get('batch')}, seq {prof.get('seq')})")
    if result["warnings"]:
        ET.SubElement(suite, "system-out").text = "\n".join(result["warnings"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    ET.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def summary(r: dict) -> str:
    parts = ", ".join(f"{c['what']} {c['value']:.2f} {'>=' if c['passed'] else '<'} {c['threshold']:.2f}"
                      for c in r["checks"])
    return f"optin gate: {'PASS' if r['passed'] else 'FAIL'}: {parts}"
