"""The example sweeps shipped inside the package (didray/sweeps: in a checkout, a link to the
repository's sweeps/), so that an installed didray runs them from any directory by name:
`didray run toy` is `didray run sweeps/toy.yaml` from the repository root.

A path that exists is always taken as the path; a bare name (no `/`) that is no file here is
looked up among the shipped sweeps. A shipped sweep's own data (`data/...` in the file) is read
from beside it, as every sweep file's relative paths are (didray.config.inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from didray.config.schema import Sweep

SHIPPED = Path(__file__).parent / "sweeps"


def shipped() -> list[str]:
    """The names of the shipped example sweeps, sorted."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def sweep_file(given: str) -> Path:
    """The sweep file `given` names: the path itself when it exists or has a `/`, else the
    shipped sweep of that name (`toy` or `toy.yaml`); a name that is neither is returned as
    given, for the loader to report."""
    path = Path(given)
    # A path is never looked up (nor stat'ed here: in a directory the user cannot enter,
    # Path.exists raises, where the loader says "cannot read" in one line).
    if "/" in given or path.is_absolute() or path.exists():
        return path
    candidate = SHIPPED / (given if given.endswith((".yaml", ".yml")) else f"{given}.yaml")
    return candidate if candidate.is_file() else path


def load(given: str, overrides: Sequence[str] = ()) -> tuple[Path, Sweep]:
    """The sweep file `given` names (see sweep_file) and the sweep it holds, validated."""
    from didray.config.load import SweepFileError, load_sweep

    file = sweep_file(given)
    if "/" not in given and not file.exists():
        raise SweepFileError(given, [f"no such file, and no shipped example sweep of that name "
                                     f"(shipped: {', '.join(shipped())})"])
    return file, load_sweep(file, overrides)
