"""Every ```python snippet of docs/plugins.md runs as written.

The snippets are joined, in order, into one module in a temporary folder, which pytest then runs in a
subprocess: importing the module runs every snippet (the later ones use the classes of the earlier
ones, as a reader typing them in would), and the test functions of "Testing a plugin" run as tests.
CUDA snippets run under Numba's simulator (tests/conftest.py has set NUMBA_ENABLE_CUDASIM=1, which the
subprocess inherits) with small launches, as the suite's ``cuda_backend`` fixture has them.
"""

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "plugins" / "cnnrun-swish"


def python_snippets(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_every_python_snippet_of_the_plugin_guide_runs(tmp_path):
    snippets = python_snippets(GUIDE.read_text(encoding="utf-8"))
    assert len(snippets) >= 8
    module = tmp_path / "test_guide_snippets.py"
    module.write_text("".join(f"# --- docs/plugins.md line {line}\n{code}\n\n" for line, code in snippets))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": os.environ.get("NUMBA_ENABLE_CUDASIM", "1"),
           "CNNRUN_CUDA_BLOCK_SIZE": "32", "CNNRUN_CUDA_MAX_BLOCKS": "2",
           "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", module.name],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b3 passed\b", result.stdout) and "skipped" not in result.stdout, result.stdout[-2000:]


def library_names() -> set[str]:
    """Names a snippet can only have by importing them: NumPy's, pytest's, Numba's and cnnrun's."""
    import cnnrun.engine
    import cnnrun.engine.cuda
    import cnnrun.engine.gradcheck
    import cnnrun.engine.jit
    import cnnrun.engine.options

    modules = (cnnrun.engine, cnnrun.engine.cuda, cnnrun.engine.gradcheck, cnnrun.engine.jit, cnnrun.engine.options)
    return {"np", "numpy", "pytest", "numba", "cuda", "float64", "prange"} | {
        name for module in modules for name in dir(module)
        if not name.startswith("__") and not inspect.ismodule(getattr(module, name))}


def test_every_snippet_shows_its_imports():
    """A snippet that uses np, Layer, hookimpl, cpu_kernel, ... imports it itself."""
    library = library_names()
    for line, code in python_snippets(GUIDE.read_text(encoding="utf-8")):
        tree = ast.parse(code)
        imported = {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        missing = sorted((used & library) - imported - defined)
        assert not missing, f"docs/plugins.md line {line}: the snippet uses {missing} without importing them"
