"""The code's structure: imports run one way, and the pure modules load without Django.

The contracts themselves are in pyproject.toml (``[tool.importlinter]``); ``make lint`` checks
them too, these tests make the suite fail on its own when an import runs the wrong way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", ["trading.curve", "protocol"])
def test_pure_module_imports_without_django(module: str) -> None:
    # A fresh interpreter with an empty environment (no DJANGO_SETTINGS_MODULE, isolated mode):
    # what the module imports is all that gets loaded.
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {module}; "
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'django'); "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], env={}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
