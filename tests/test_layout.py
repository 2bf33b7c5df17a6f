"""The source layout: small modules, every package installed, each layer family's kernels in its own
package (``plugins/<family>/cpu.py``, ``cuda.py``), no import cycle among engine/'s modules."""

import ast
import importlib
from pathlib import Path

from cnnrun.engine import make_plugin_manager
from cnnrun.engine.plugins import DEFAULT_PLUGINS, Registries

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("engine", "plugins", "cli")
MAX_LINES = 500


def test_no_source_file_is_over_500_lines():
    long = {str(path.relative_to(ROOT)): n for folder in SOURCES for path in (ROOT / folder).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_is_installed():
    """setup.py finds every package under engine/, plugins/ and cli/ (as cnnrun.<package>)."""
    for folder in SOURCES:
        for init in (ROOT / folder).rglob("__init__.py"):
            name = ".".join(("cnnrun", *init.parent.relative_to(ROOT).parts))
            assert importlib.import_module(name).__file__ == str(init)


def test_each_family_keeps_its_kernels_in_its_own_package():
    """A built-in plugin registers, per device, the module of that device in its own package."""
    devices = Registries.from_plugin_manager(make_plugin_manager(load_entrypoints=False)).devices
    registered = [(device, module, plugin) for device, modules in devices.kernel_modules.items()
                  for module, plugin in modules]
    assert {device for device, _, _ in registered} == {"cpu", "cuda"}
    for device, module, plugin in registered:
        assert plugin in DEFAULT_PLUGINS
        if plugin != "cnnrun.plugins.devices":  # the engine's own kernels (the losses)
            assert module == f"{plugin}.{device}"


def engine_imports(engine=ROOT / "engine") -> dict[str, set[str]]:
    """``{module: engine modules it imports}`` for every engine/*.py, counting imports anywhere in the
    file (a lazy import inside a function is a dependency too) except under ``if TYPE_CHECKING:``
    (annotations only: never run); ``__init__`` for the package itself."""
    modules = {path.stem for path in engine.glob("*.py")}
    graph = {}
    for path in sorted(engine.glob("*.py")):
        found = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for block in ast.walk(tree):
            if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
                block.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    parts = node.module.split(".") if node.module else []
                elif node.level == 0 and (node.module or "").startswith("cnnrun.engine"):
                    parts = node.module.split(".")[2:]
                else:
                    continue
                if parts:
                    found.add(parts[0])
                else:  # from . import name: a module, or a name of the package
                    found.update(a.name if a.name in modules else "__init__" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[2] for a in node.names
                             if a.name.startswith("cnnrun.engine.") and len(a.name.split(".")) > 2)
        graph[path.stem] = found & modules - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_names_the_cycle_and_counts_lazy_imports(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import y\n")
    (tmp_path / "c.py").write_text("import numpy\nfrom . import a\n")
    graph = engine_imports(tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("from .errors import E\n")  # no such module here: not an edge
    assert find_cycle(engine_imports(tmp_path)) is None
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    assert engine_imports(tmp_path)["c"] == set()  # for annotations only: never imported


def test_engine_modules_import_no_cycle():
    cycle = find_cycle(engine_imports())
    assert cycle is None, f"import cycle among engine/ modules: {' -> '.join(cycle)}"
