import ast
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "ray", "cuml", "cupy", "mediapipe", "transformers", "umap", "google.genai")


def test_importing_handclust_loads_no_heavy_library():
    """`import handclust` (and the CLI) must stay cheap: models and clusters load inside stages."""
    code = (
        "import sys, handclust, handclust.pipeline, handclust.cli, handclust.activities\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at module level: {out.stdout.strip()}"


# --------------------------------------------------------------------------- one direction of imports

PACKAGE = Path(__file__).resolve().parents[1] / "handclust"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``package`` (a package is its ``__init__``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any nesting level (inside functions too).

    ``from pkg import x`` counts as importing ``pkg.x`` when ``x`` is a submodule, else ``pkg``;
    ``import pkg.a.b`` as importing ``pkg.a.b``. The implicit import of a module's parent packages
    is not an edge: it is Python's, not the code's choice, and counting it would make every
    submodule that a package's ``__init__`` re-exports look like a cycle.
    """
    modules = module_names(package)
    root = package.name
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def nearest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = mod.split(".") if is_package else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target == root or target.startswith(root + "."):
                    found = nearest(target)
                    if found and found != mod:
                        graph[mod].add(found)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_handclust_has_no_import_cycle():
    """Imports flow one way, function-level imports included: a cycle means a module cannot be
    understood, tested or moved without the other, and a lazy import hides it until a refactor
    turns it into an ImportError."""
    graph = import_graph(PACKAGE)
    assert {"handclust.pipeline", "handclust.activities", "handclust.runtime.ray_runner"} <= set(graph)
    # The graph sees imports inside functions: the run reaches the Ray runner only when asked for.
    assert "handclust.runtime.ray_runner" in graph["handclust.runtime.runners"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The check above must not pass by missing what it looks for: a function-level import that
    closes a cycle, written with ``from pkg import submodule``."""
    pkg = tmp_path / "pkgx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx.sub.b import thing\n")
    (pkg / "sub" / "b.py").write_text("def thing():\n    from pkgx import c\n    return c\n")
    (pkg / "c.py").write_text("import os\n\n\ndef f():\n    if os:\n        from .a import x  # noqa\n")
    graph = import_graph(pkg)
    assert graph["pkgx.sub.b"] == {"pkgx.c"}
    assert graph["pkgx.c"] == {"pkgx.a"}
    assert find_cycle(graph) == ["pkgx.a", "pkgx.sub.b", "pkgx.c", "pkgx.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


# --------------------------------------------------------------------------- layers

# The folders are the layers, bottom to top; a module imports only its own layer and those below
# (function-level imports included). The base modules and the entry points sit at the top level of
# the package: BASE below everything, every other top-level module above everything.
LAYERS = ("base", "core", "io", "modalities", "runtime", "reporting", "app")
BASE = {"config", "schema", "stages", "prices", "colours", "progress", "extras", "errors"}


def layer(module: str) -> str:
    """``handclust.io.video`` -> ``io``; top-level modules -> ``base`` or ``app``; the package -> ``app``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "app"
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").is_file():
        return "base" if parts[1] in BASE else "app"
    return parts[1]


def test_imports_point_down_the_layers():
    """No module imports a layer above its own; synthetic data (test and demo footage) is imported
    only by the entry points, never by the product's layers."""
    graph = import_graph(PACKAGE)
    known = {*LAYERS, "synthetic"}
    assert {layer(m) for m in graph} == known, "a folder under handclust/ that is not a layer: add it to LAYERS"
    upward = []
    for mod, targets in graph.items():
        lm = layer(mod)
        for t in sorted(targets):
            lt = layer(t)
            if lt == "synthetic":
                if lm not in ("app", "synthetic"):
                    upward.append(f"{mod} -> {t} (synthetic data, imported by the product)")
            elif lm != "synthetic" and LAYERS.index(lt) > LAYERS.index(lm):
                upward.append(f"{mod} ({lm}) -> {t} ({lt})")
    assert not upward, "imports running up the layers:\n" + "\n".join(upward)


def test_output_paths_live_in_the_run_layout():
    """Every path a run writes is named in handclust/io/layout.py: no module spells a run's file name itself."""
    import re

    spelled = re.compile(r'"(clips|clusters|labels|hierarchy|embedding_2d|neighbours|ablations)\.parquet"|"(eval|run)\.json"'
                         r'|"model/|"report/(index\.html|reel)|f"(segments|frames|status|timelines)/')
    found = [f"{p.relative_to(PACKAGE.parent)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "layout.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert not found, "output paths spelled outside handclust/io/layout.py: " + ", ".join(found)
