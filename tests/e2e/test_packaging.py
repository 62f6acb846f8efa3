"""The wheel installs one import package, ``baton``, and a working ``baton`` command.

The top-level folders ``domain/``, ``projections/`` and ``adapters/`` are the layout of the
repository only: installed, they are ``baton.domain``, ``baton.projections`` and
``baton.adapters``, so Baton never overwrites another distribution's ``adapters`` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # built from a copy: no build/ in the checkout
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("domain", "projections", "adapters"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        cwd=out,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (built,) = out.glob("baton-*.whl")
    return built


def test_the_wheel_holds_only_the_baton_package_at_its_top(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"baton"}
    for package in ("domain", "projections", "adapters"):
        assert f"baton/{package}/__init__.py" in names
        assert f"baton/{package}/py.typed" in names
    assert "baton/domain/model.py" in names
    # the dashboard's pages and scripts are package data
    for static in ("index.html", "app.js", "app.css", "graph.js", "pages/task.js"):
        assert f"baton/adapters/ui/static/{static}" in names, static


def test_the_installed_wheel_runs_baton_and_has_no_bare_packages(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Baton's dependencies come from the test environment (no network needed); Baton itself
    # only from the wheel.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    shown = subprocess.run(
        [str(env_dir / "bin" / "baton"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
    )
    assert shown.returncode == 0, shown.stderr
    assert "usage: baton" in shown.stdout
    where = subprocess.run(
        [str(python), "-c", "import baton.domain.model as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
        check=True,
    ).stdout
    assert str(env_dir) in where
    shell = subprocess.run(
        [
            str(python),
            "-c",
            "from baton.adapters.ui.server import STATIC; "
            "print((STATIC / 'index.html').read_text())",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
        check=True,
    ).stdout
    assert "/static/app.js" in shell  # the installed dashboard finds its page
    for bare in ("domain", "projections", "adapters"):
        probe = subprocess.run(
            [str(python), "-c", f"import {bare}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean,
        )
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, bare
