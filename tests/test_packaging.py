"""The distribution: the wheel ships the example sweeps and their data, every third-party module
didray imports is a declared requirement, and a shipped sweep is found by name outside a
checkout (didray/examples.py)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from support.imports import imports

from didray import examples
from didray.config.load import SweepFileError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SWEEPS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "sweeps").rglob("*")
                if p.is_file())


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Every distribution pyproject requires, extras included, by normalized name."""
    extras = PYPROJECT.get("optional-dependencies", {}).values()
    requirements = [*PYPROJECT["dependencies"], *(r for group in extras for r in group)]
    return {normalized(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}


def third_party_imports() -> dict[str, str]:
    """Top-level module -> a file of didray/ that imports it, for every module neither from the
    standard library nor didray's own; lazy imports and import_module("x") strings count."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "didray").rglob("*.py")):
        relative = path.relative_to(ROOT)
        for name in imports(path.read_text(), relative):
            top = name.split(".")[0]
            if top and top not in sys.stdlib_module_names and top != "didray":
                found.setdefault(top, relative.as_posix())
    return found


def test_every_third_party_import_is_declared():
    providers = importlib.metadata.packages_distributions()  # module -> installed dists
    wanted = declared()
    missing = {module: where for module, where in third_party_imports().items()
               if not ({normalized(module)} | {normalized(d) for d in providers.get(module, [])})
               & wanted}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_sweeps_ship_as_package_data():
    assert (ROOT / "didray" / "sweeps").resolve() == (ROOT / "sweeps").resolve()
    assert {"sweeps/toy.yaml", "sweeps/data/smollm2-qa.jsonl"} <= set(SWEEPS)
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["didray"]
    matched = {path.relative_to(ROOT / "didray").as_posix()
               for pattern in package_data for path in (ROOT / "didray").glob(pattern)}
    assert set(SWEEPS) <= matched  # each sweep file and data file is didray's package data


def test_a_shipped_sweep_is_found_by_name_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert examples.shipped() == sorted(Path(f).stem for f in SWEEPS if f.count("/") == 1)
    file, sweep = examples.load("toy")
    assert file == examples.SHIPPED / "toy.yaml" and sweep.name == "toy"
    assert examples.load("toy.yaml")[0] == file
    _, smollm2 = examples.load("smollm2-cpu")  # its data: the shipped copy, absolute
    for source in (smollm2.data.source, smollm2.eval.qa.source):
        assert Path(source).is_absolute() and Path(source).exists(), source
    with pytest.raises(SweepFileError, match="shipped: calibration, ci, did-claims"):
        examples.load("tyo")


def test_a_path_is_still_a_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    file, sweep = examples.load("sweeps/smollm2-cpu.yaml")
    assert file == Path("sweeps/smollm2-cpu.yaml")
    assert sweep.data.source == "sweeps/data/smollm2-prompts"  # exists here: left as written


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel (setuptools from this environment, no download: about 10 s) from a copy
    of what a source distribution holds, so the checkout gets no build/ or egg-info."""
    setuptools = importlib.metadata.version("setuptools")
    if tuple(int(p) for p in setuptools.split(".")[:2]) < (70, 1):
        pytest.skip(f"setuptools {setuptools} has no bdist_wheel of its own (>= 70.1)")
    source = tmp_path / "src"
    shutil.copytree(ROOT / "didray", source / "didray", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "sweeps", source / "sweeps")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "--quiet", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("didray-*.whl")
    return wheel


def test_the_wheel_holds_the_sweeps_their_data_and_the_requirements(tmp_path):
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        files = set(wheel.namelist())
        (metadata,) = (f for f in files if f.endswith(".dist-info/METADATA"))
        text = wheel.read(metadata).decode()
    assert {f"didray/{f}" for f in SWEEPS} <= files
    assert {"didray/cli.py", "didray/examples.py"} <= files
    required = {normalized(re.match(r"Requires-Dist: ([A-Za-z0-9_.-]+)", line).group(1))
                for line in text.splitlines() if line.startswith("Requires-Dist:")}
    assert declared() <= required
    assert "Project-URL: Paper, https://arxiv.org/abs/2505.23761" in text
    assert "Classifier: Programming Language :: Python :: 3.11" in text
