"""The package's layering, read from the source (ast): no import cycle among tfwidth's and device_profiler's modules,
at module level or inside functions, and device_profiler free of tfwidth and TensorFlow (it installs on a Pi with
numpy and a runtime)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tfwidth", "device_profiler")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (``from a import b`` names a and a.b)."""
    pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    names = {module_name(p) for p in files}
    g = {}
    for p in files:
        m = module_name(p)
        # a module's package (__init__) is below it: importing the package is not an edge back
        g[m] = {d for d in imports_of(p) if d in names and d != m and not m.startswith(d + ".")}
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# tfwidth's modules in the order of the data flow (README, Layout): each imports only modules before it
# (tfwidth.arch, the package, sits above its modules: it imports the built-in architectures to register them)
ORDER = ("errors", "artifacts", "cost", "arch.base", "arch.slim", "arch.mobilenet_v1", "arch.mobilenet_v2", "arch",
         "space", "mrf", "data", "convert", "profile", "host", "latency", "stats", "supernet", "training", "probe",
         "solve", "aows", "refine", "export", "train", "report", "pipeline", "__main__")


def test_modules_import_only_lower_layers():
    g = graph()
    mine = sorted(m.split(".", 1)[1] for m in g if m.startswith("tfwidth."))
    assert sorted(ORDER) == mine, "a module is missing from ORDER (or ORDER names one that is gone)"
    rank = {f"tfwidth.{m}": i for i, m in enumerate(ORDER)}
    upward = [f"{m} -> {d}" for m in rank for d in sorted(g[m]) if d in rank and rank[d] > rank[m]]
    assert not upward, "imports against the data flow: " + ", ".join(upward)


def test_device_profiler_needs_neither_tfwidth_nor_tensorflow():
    for p in sorted((ROOT / "device_profiler").rglob("*.py")):
        bad = {d for d in imports_of(p) if d.split(".")[0] in ("tfwidth", "tensorflow", "tf_keras", "keras")}
        assert not bad, f"{p.relative_to(ROOT)} imports {sorted(bad)}"
