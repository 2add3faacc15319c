"""No import cycles among the project's modules (optin, export, profiling).

Imports are read with ast, at module level and inside functions alike: a function-level import
only hides a cycle until someone calls it in the other order. A package's __init__ that imports
its own submodules to register them (adapters, engines, importance methods), which import the
package back for the registry, is the one pattern allowed. Layering this protects: profiling
imports no pruning step (importance, search, narrow, prune, retune, refine).
"""
import ast
import os


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("optin", "export", "profiling")
PRUNING_STEPS = ("optin.importance", "optin.search", "optin.narrow", "optin.prune", "optin.retune", "optin.refine")


def modules(root: str, packages=PACKAGES) -> dict[str, str]:
    out = {}
    for pkg in packages:
        for dirpath, _, files in os.walk(os.path.join(root, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its body."""
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = m.split(".") if is_pkg else m.split(".")[:-1]
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges[m].update(n for n in names if n in mods and n != m and not m.startswith(n + "."))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components of more than one module (Tarjan), less the registry pattern."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    # a package and its own submodules only (the registry's __init__ importing them to register)
    return [c for c in out if not any(all(x == p or x.startswith(p + ".") for x in c) for p in c)]


def test_cycle_finder_sees_function_level_imports(tmp_path):
    """The finder itself, on a planted cycle through an import inside a function."""
    pkg = tmp_path / "optin"
    (pkg / "reg").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "c.py").write_text("def g():\n    from optin.a import x\n")
    (pkg / "reg" / "__init__.py").write_text("from . import one\n")
    (pkg / "reg" / "one.py").write_text("from . import register\n")
    found = cycles(imports(modules(str(tmp_path), ("optin",))))
    assert found == [frozenset({"optin.a", "optin.b", "optin.c"})]


def test_no_import_cycles():
    found = cycles(imports(modules(ROOT)))
    assert not found, "import cycles: " + " | ".join(" <-> ".join(sorted(c)) for c in found)


def test_profiling_imports_no_pruning_step():
    edges = imports(modules(ROOT))
    bad = sorted((m, n) for m, ns in edges.items() if m.startswith("profiling") for n in ns
                 if n.startswith(PRUNING_STEPS))
    assert not bad, f"profiling imports pruning steps: {bad}"
