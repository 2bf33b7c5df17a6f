"""The tutorial of docs/python.md runs as written (its ```python snippets, in order, in one namespace)."""

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "python.md"


def test_the_tutorial_runs(monkeypatch, tmp_path):
    snippets = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(snippets) >= 4
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the tutorial loads examples/small_digits.json
    monkeypatch.chdir(tmp_path)  # and whatever it writes stays out of the checkout
    namespace, shown = {}, io.StringIO()
    with contextlib.redirect_stdout(shown):
        for snippet in snippets:
            exec(compile(snippet, str(GUIDE), "exec"), namespace)
    assert "Network('small_digits', input_shape=(1, 8, 8), layers=14)" in shown.getvalue()
    assert len(namespace["history"].history["val_loss"]) == 1
    assert namespace["probabilities"].shape == (200, 10) and namespace["report"]["accuracy"] > 0.5
    assert os.fspath(namespace["net"].base_dir) == "examples"
