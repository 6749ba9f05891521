"""Security of what didray reads and writes (docs/design.md §3.3): credentials in a storage URI
are refused without being echoed, and Tune state that others could have written is not
unpickled by --resume or --extend.

The refusals come before Ray starts; the tier guard on ray.init (tests/conftest.py) fails
these fast tests if one ever comes later.
"""

import os
import pickle
from pathlib import Path

import pytest
from support.sweeps import CI, ROOT, write_sweep

from didray.cli import main
from didray.config.load import SweepFileError, parse_sweep
from didray.storage import redact
from didray.sweep import state

SECRET = "wJalr/K7MDENG+bPxRfiCY"  # an AWS-like secret key, '/' and all
# A closed loopback port: before the refusal existed, opening it failed fast, not on a network.
URI = f"s3://AKIDEXAMPLE:{SECRET}@bucket/results?endpoint_override=127.0.0.1:9&scheme=http"
SHOWN = "s3://***@bucket/results?endpoint_override=127.0.0.1:9&scheme=http"


@pytest.mark.parametrize(("uri", "shown"), [
    (URI, SHOWN),
    ("s3://AKIDEXAMPLE@bucket/x", "s3://***@bucket/x"),  # s3 reads a bare user as its key
    ("abfs://account:KEY@container/x", "abfs://***@container/x"),
    ("abfs://account@container/x?client_secret=S&tenant_id=t",
     "abfs://account@container/x?client_secret=***&tenant_id=t"),
    ("see s3://a:b@one/x and gs://c:d@two/y", "see s3://***@one/x and gs://***@two/y"),
    # No credentials: a user name, a host's port, an @ in a trial's path are kept.
    ("abfs://account@container/x", "abfs://account@container/x"),
    ("hdfs://user@namenode:8020/r", "hdfs://user@namenode:8020/r"),
    ("hdfs://namenode:8020/r/pg@data.seed=1", "hdfs://namenode:8020/r/pg@data.seed=1"),
    ("/results/a:b@c", "/results/a:b@c"),
])
def test_redact_hides_credentials_only(uri, shown):
    assert redact(uri) == shown


def commands(tmp_path: Path) -> dict[str, list[str]]:
    """Every way a storage URI reaches didray, each given the URI with credentials."""
    sweep = write_sweep(tmp_path, {**CI, "storage": URI})
    ci = str(ROOT / "sweeps/ci.yaml")
    return {"validate": ["validate", str(sweep)],
            "override": ["validate", ci, f"storage={URI}"],
            "run": ["run", ci, "--storage", URI],
            "analyze": ["analyze", URI],
            "submit": ["submit", ci, "--storage", URI, "--working-dir", str(ROOT),
                       "--address", "http://127.0.0.1:9"]}


@pytest.mark.parametrize("command", ["validate", "override", "run", "analyze", "submit"])
def test_credentials_in_a_uri_are_refused_unechoed(command, tmp_path, monkeypatch, capsys):
    args = commands(tmp_path)[command]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DIDRAY_MIRROR", str(work / "mirror"))
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "AKIDEXAMPLE" not in out + err
    assert f"'{SHOWN}' carries credentials" in err and "AWS_ACCESS_KEY_ID" in err
    # Nothing was written: no mirror, no results (so no manifest.json, no checkpoint path).
    assert list(work.iterdir()) == []


def test_no_sweep_holds_credentials():
    """The manifest records the sweep as validated: a sweep with credentials never exists."""
    with pytest.raises(SweepFileError) as refused:
        parse_sweep({**CI, "storage": URI})
    assert SECRET not in str(refused.value) and SHOWN in str(refused.value)


def planted_sweep(storage: Path, experiment: str = "tune") -> tuple[Path, Path]:
    """(sweep directory, marker): a results directory, private (whatever the umask), whose
    Tune state, once unpickled, runs code that creates the marker file."""
    sweep_dir, marker = storage / "ci", storage / "planted-code-ran"

    class Planted:
        def __reduce__(self):
            return open, (str(marker), "w")

    (sweep_dir / experiment).mkdir(parents=True)
    (sweep_dir / experiment / "tuner.pkl").write_bytes(pickle.dumps(Planted()))
    for path, mode in [(sweep_dir, 0o755), (sweep_dir / experiment, 0o755),
                       (sweep_dir / experiment / "tuner.pkl", 0o644)]:
        os.chmod(path, mode)
    return sweep_dir, marker


@pytest.mark.parametrize(("experiment", "writable", "flag", "mode"), [
    ("tune", "ci", "--resume", 0o757),  # the sweep directory: others may write
    ("tune", "ci/tune", "--resume", 0o775),  # the Tune experiment: its group may write
    ("tune", "ci/tune/tuner.pkl", "--resume", 0o646),
    ("tune-2", "ci/tune-2", "--extend", 0o777),  # an extension's experiment
])
def test_continuing_refuses_tune_state_others_can_write(experiment, writable, flag, mode,
                                                        tmp_path, capsys):
    sweep_dir, marker = planted_sweep(tmp_path, experiment)
    os.chmod(tmp_path / writable, mode)
    args = ["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(tmp_path), flag]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / writable} is writable by its group or by others" in err
    assert "unpickling" in err and f"chmod -R go-w {sweep_dir}" in err
    assert not marker.exists()  # the planted code did not run


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory away needs root")
def test_continuing_refuses_tune_state_of_another_user(tmp_path):
    sweep_dir, marker = planted_sweep(tmp_path)
    os.chown(sweep_dir / "tune", 65534, 65534)
    with pytest.raises(state.SweepStateError, match="is owned by another user"):
        state.check_private(sweep_dir)
    assert not marker.exists()


def test_private_tune_state_passes(tmp_path):
    sweep_dir, _ = planted_sweep(tmp_path)
    (sweep_dir / "tune-2").mkdir()
    os.chmod(sweep_dir / "tune-2", 0o700)
    state.check_private(sweep_dir)  # modes 755, 644 and 700: nothing refused
    state.check_private(tmp_path / "absent")  # a new sweep: nothing to check
