"""The package's import graph: every module imports on its own, nothing imports the package root,
no two modules import each other (directly or round a longer loop), and the study stays apart.

The graph is read with `ast` from the source files, function-local imports counted: a loop that
only closes at call time still ties the modules together. `import a.b` and `from a import b` (b a
module) are edges to a.b; `from a.b import name` (name not a module) is an edge to a.b. Parent
packages that Python runs on the way are not edges, or every module would loop through its
package's `__init__`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stitchnet"
ROOT = "stitchnet"

# Import loops allowed for now, each as a frozenset of its modules with a comment saying why and
# what ends it. None is left. A new loop, or one of these growing to take in another module,
# fails the test.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import of the package in one file: the target
    module, and the name taken from it when that name is not a module itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == ROOT]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None) if sub in modules else (target, alias.name))
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = set()
        for target, _ in imports_of(name, path, set(files)):
            while target not in files and "." in target:  # `import a.b.c` of a name in a.b
                target = target.rpartition(".")[0]
            if target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. the import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_cycle_finder_sees_a_loop_and_only_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_the_package_root():
    files = module_files()
    offenders = []
    for name, path in files.items():
        if name == ROOT:
            continue
        for target, taken in imports_of(name, path, set(files)):
            # `import stitchnet` or `from stitchnet import fit`: the root's __init__ is run for
            # a name it defines, so the module works only after __init__ got that far.
            if target == ROOT:
                offenders.append(f"{name}: {'import stitchnet' if taken is None else taken}")
    assert offenders == []


def test_no_import_loops_but_the_known_ones():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert new == [], "import loops: " + json.dumps(new, indent=1)


def test_only_the_cli_imports_the_study():
    graph = import_graph()
    importers = sorted(
        name
        for name, targets in graph.items()
        if not name.startswith("stitchnet.study")
        and any(t == "stitchnet.study" or t.startswith("stitchnet.study.") for t in targets)
    )
    assert all(name.startswith("stitchnet.cli") for name in importers), importers


def test_the_study_is_not_imported_by_the_api():
    # The root package and the plain API must not pull the study in, even indirectly.
    graph = import_graph()
    reach = reachable(graph, "stitchnet") | reachable(graph, "stitchnet.pipeline")
    assert sorted(m for m in reach if m.startswith("stitchnet.study")) == []


def outside_imports() -> list[str]:
    """Every module outside the package that the package imports (top-level `import x.y` and
    `from x.y import z` statements), for the fresh interpreter to load once."""
    names = set()
    for path in module_files().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in (ROOT, "__future__"))


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that importing `start` can import, at load or at call time."""
    seen, todo = set(), [start]
    while todo:
        for t in graph[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_segmenting_never_reaches_the_lung_field_trainer():
    # The lung field's net, body and 3-D clean-up serve inference and data preparation; its
    # optimiser and augmentation are for the one command that rebuilds the shipped weights.
    graph = import_graph()
    trainer = "stitchnet.lungfield.train"
    users = [
        m
        for m in graph
        if (m.startswith("stitchnet.inference") or m.startswith("stitchnet.lungfield"))
        and m != trainer
    ]
    assert len(users) > 10  # the inference package and the lung field are there to check
    assert sorted(m for m in users if trainer in reachable(graph, m)) == []


# Run in a fresh interpreter: the libraries outside the package are imported once (those that
# fail here are left to fail in the child that needs them), then each module of the package is
# imported in a forked child that has imported nothing of the package before it.
_FRESH_IMPORTS = """
import importlib, json, os, sys, traceback
libs, names = json.loads(sys.argv[1]), sys.argv[2:]
for lib in libs:
    try:
        importlib.import_module(lib)
    except Exception:
        pass
assert not any(m == "stitchnet" or m.startswith("stitchnet.") for m in sys.modules)
failed = {}
for name in names:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc(limit=-3).encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[name] = message or f"exit status {status}"
print(json.dumps(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own():
    names = sorted(module_files())
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_IMPORTS, json.dumps(outside_imports()), *names],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_inference_never_reaches_the_training_loop():
    # Segmenting a scan or predicting slices needs a checkpoint and the data readers, never the
    # plain API's training (pipeline -> train); the command that packs the shipped default model
    # scores it through that API, so it lives outside inference (stitchnet.make_default).
    graph = import_graph()
    users = [m for m in graph if m == "stitchnet.inference" or m.startswith("stitchnet.inference.")]
    assert "stitchnet.inference.predict" in users and "stitchnet.inference.defaults" in users
    banned = {"stitchnet.pipeline", "stitchnet.train"}
    assert sorted(m for m in users if banned & reachable(graph, m)) == []
