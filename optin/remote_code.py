"""Remote code for pruned folders: what lets plain transformers rebuild a narrowed model,
`AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)` (or
AutoModelForImageClassification), where optin is not installed.

transformers keeps one global head count, so the dense config cannot describe a non-uniformly
narrowed model. `save_pruned` therefore also copies the family's sources from optin/remote/ into
the folder and adds to config.json (whose dense fields stay as they are, for optin.load_pruned):
- `optin_narrowed`: the widths per layer (optin/remote/optin_pruned.py says what each field means);
- `auto_map`: the Auto class → `modeling_optin_<family>.Optin<class>`, a subclass of the
  transformers class that narrows the dense skeleton to those widths before the weights load;
  and, for optin's own families (model code from optin/models/, carried too), AutoConfig → its config.

A new family gives optin/remote/modeling_optin_<its adapter module>.py with a Layout and
`class Optin<transformers class>(OptinPruned, <transformers class>)` for each class its adapters
build; tests/integration/test_remote_code.py runs every registered family.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import warnings

_HERE = os.path.dirname(os.path.abspath(__file__))
# where a relative import `.name` of a remote source is found: the remote sources, then optin's own model code
_SOURCE_DIRS = (os.path.join(_HERE, "remote"), os.path.join(_HERE, "models"))


def narrowed_widths(adapter, spec) -> dict:
    """config.json's `optin_narrowed`: per layer, heads kept and units kept in each run of neurons;
    the token sets where tokens are reduced."""
    runs = []
    for i, kept in enumerate(spec.neurons):
        counts, start = [], 0
        for width in adapter.run_widths(i):
            counts.append(sum(start <= n < start + width for n in kept))
            start += width
        runs.append(counts)
    # head_index: which dense heads each layer kept, for families whose narrowed layers index a
    # shared per-head table at run time (MPNet's relative-position bias); counts alone size weights
    out = {"heads": list(spec.kept_heads), "head_index": [list(h) for h in spec.heads], "runs": runs, "tokens": None}
    if spec.tokens is not None:
        out.update(tokens=[list(t) for t in spec.tokens], dense_tokens=adapter.seq_len(None))
    return out


def family_source(adapter) -> tuple[str, str] | None:
    """(path of the family's remote part, name of its class for this model), or None where the family has none."""
    path = os.path.join(_HERE, "remote", f"modeling_optin_{type(adapter).__module__.rsplit('.', 1)[-1]}.py")
    name = f"Optin{type(adapter.model).__name__}"
    if not os.path.isfile(path) or not re.search(rf"^class {name}\(", open(path).read(), re.MULTILINE):
        return None
    return path, name


def _carried(path: str) -> list[str]:
    """Source files that `path` imports relatively, recursively (transformers copies them with it)."""
    out, todo = [], [path]
    while todo:
        tree = ast.parse(open(todo.pop()).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found = [os.path.join(d, f"{node.module}.py") for d in _SOURCE_DIRS
                         if os.path.isfile(os.path.join(d, f"{node.module}.py"))]
                if not found:
                    raise FileNotFoundError(f"{path} imports .{node.module}, found in none of {_SOURCE_DIRS}")
                if found[0] not in out:
                    out.append(found[0])
                    todo.append(found[0])
    return out


def write_remote_code(out_dir: str, adapter, spec) -> dict:
    """Copy the family's remote sources into out_dir; return the entries config.json gains
    (`optin_narrowed`, `auto_map`). A family without remote code gets none: the folder then loads
    with optin.load_pruned only (warned)."""
    found = family_source(adapter)
    if found is None:
        warnings.warn(f"{adapter.config.model_type}: no remote code (optin/remote/modeling_optin_*.py); the "
                      "folder loads with optin.load_pruned only, not with transformers' from_pretrained")
        return {}
    path, name = found
    files = [path, *_carried(path)]
    for f in files:
        shutil.copyfile(f, os.path.join(out_dir, os.path.basename(f)))
    module = os.path.basename(path)[:-3]
    auto_map = {f"AutoModel{adapter.task_suffix}": f"{module}.{name}"}
    config_cls = type(adapter.config)
    if not config_cls.__module__.startswith("transformers."):  # optin's own family: its config travels too
        carried = {os.path.basename(f)[:-3] for f in files}
        src = config_cls.__module__.rsplit(".", 1)[-1]
        if src not in carried:
            raise FileNotFoundError(f"{path} does not carry {config_cls.__module__} ({config_cls.__name__})")
        auto_map["AutoConfig"] = f"{src}.{config_cls.__name__}"
    out = {"optin_narrowed": narrowed_widths(adapter, spec), "auto_map": auto_map}
    if not adapter.config.architectures:
        # as save_pretrained writes it; transformers' Auto classes fail without it where one config
        # type maps to several classes (DeiT: with and without teacher)
        out["architectures"] = [type(adapter.model).__name__]
    return out
