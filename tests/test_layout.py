"""The package's import direction (pyproject.toml, [tool.importlinter]) holds, and the check
catches a violation: a lower layer importing a higher one, or Ray imported outside the runtime
module and the executors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    # lint-imports puts its working directory first on the path: it reads the package there
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=120)


def test_the_import_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("core/paths.py", "import mmindex.cli", "Layers"),  # core reaching up to the CLI
    ("models/encoder.py", "from mmindex.index import store", "Layers"),
    ("search/searcher.py", "import ray", "Ray only"),
    ("data/scan.py", "from mmindex.testing import TINY", "tests' helpers"),
])
def test_a_violation_fails_the_check(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "mmindex", tmp_path / "mmindex",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "mmindex" / module
    target.write_text(target.read_text() + f"\n{line}  # a violation\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken and module.replace("/", ".").removesuffix(".py") in broken


def test_importing_the_library_loads_neither_ray_nor_torch():
    """`import mmindex` and `mmindex --help` stay light: the public API loads lazily, and
    Ray is imported only when a job runs on it."""
    light = "import mmindex, mmindex.cli"
    lazy_ray = ("import mmindex.ingestion.ray_job, mmindex.train.ray_backend, "
                "mmindex.core.ray_runtime")
    assert loaded_after(light, ("ray", "torch", "faiss", "pyarrow")) == []
    assert loaded_after(lazy_ray, ("ray",)) == []


def loaded_after(imports: str, heavy: tuple[str, ...]) -> list[str]:
    probe = (f"import json, sys\n{imports}\n"
             f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout)
