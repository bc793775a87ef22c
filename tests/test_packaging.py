"""The built wheel carries what the package loads at run time (Lua scripts, the JS client)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_wheel_contains_lua_scripts_js_client_and_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {path.name for path in (ROOT / "flask_tasks/brokers/lua").glob("*.lua")}
    assert {f"flask_tasks/brokers/lua/{name}" for name in scripts} <= names
    assert "flask_tasks/web/static/flask-tasks.js" in names
    assert "flask_tasks/web/static/dashboard.js" in names
    assert "flask_tasks/web/static/dashboard.css" in names
    assert "flask_tasks/web/templates/flask_tasks/dashboard.html" in names
    assert "flask_tasks/py.typed" in names
