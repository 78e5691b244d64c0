"""The import-layering contract (docs/architecture.md): every import, module-level or inside a
function, looks down the layer list, and the module graph has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vidsim2real"

# lowest first; a module may import its own layer and the layers below it, never above
LAYERS = [
    ("foundation", ["vidsim2real", "vidsim2real.errors", "vidsim2real.layout", "vidsim2real.strict_yaml",
                    "vidsim2real.io", "vidsim2real.ext"]),
    ("raster", ["vidsim2real.raster"]),
    ("texture", ["vidsim2real.texture"]),
    ("scene", ["vidsim2real.scene"]),
    ("render", ["vidsim2real.shading", "vidsim2real.render"]),
    ("domains", ["vidsim2real.domains"]),
    ("translate", ["vidsim2real.translate"]),
    ("train", ["vidsim2real.train"]),
    ("metrics", ["vidsim2real.metrics"]),
    ("pipeline", ["vidsim2real.pipeline"]),
    ("cli", ["vidsim2real.cli", "vidsim2real.__main__"]),
]


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming the module's package or module."""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and pre.count(".") > depth:
                best, depth = i, pre.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def imports(module: str, path: Path, known: dict) -> set[str]:
    """vidsim2real modules ``module`` imports anywhere in its body (function-level included)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vidsim2real":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vidsim2real"}
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_imports_only_look_down():
    upward = []
    for src, deps in graph().items():
        for dst in deps:
            if layer_of(dst) > layer_of(src):
                upward.append(f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_translate_imports_nothing_from_train_and_nothing_imports_cli():
    for src, deps in graph().items():
        if src.startswith("vidsim2real.translate"):
            assert not [d for d in deps if d.startswith("vidsim2real.train")], src
        if not src.startswith(("vidsim2real.cli", "vidsim2real.__main__")):
            assert not [d for d in deps if d.startswith("vidsim2real.cli")], src


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph; a package's __init__
    re-exporting its submodules is an edge like any other."""
    g = graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_upward_and_function_level_imports(tmp_path):
    """The contract can fail: a function-level upward import and a cycle are both found."""
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from ..cli.main import main\n    return main\n")
    known = modules()
    found = imports("vidsim2real.raster.m", mod, known)
    assert "vidsim2real.cli.main" in found
    assert layer_of("vidsim2real.cli.main") > layer_of("vidsim2real.raster.m")
