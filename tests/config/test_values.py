"""Values a sweep takes from the command line as it takes them from the file (design §3.3):
YAML 1.1 number forms, storage locations, reserved and overlong names, out-of-range scales and
empty axes are refused in one line naming the override as typed; `~` and `$VARS` in storage
are expanded. The same cases in files are in corpus/ (test_load)."""

from pathlib import Path

import pytest

from didray.cli import main
from didray.config.load import load_sweep
from didray.config.schema import RESERVED_NAMES
from didray.storage import Storage
from didray.sweep.prepare import Store

CI = Path(__file__).parents[2] / "sweeps/ci.yaml"
YAML11 = "by YAML 1.1 and as text by YAML 1.2: write the number in decimal, or quote the text"


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("train.steps=1:30", f"train.steps=1:30: '1:30' is read as 90 (base-60) {YAML11}"),
        ("train.steps=010", f"train.steps=010: '010' is read as 8 (octal) {YAML11}"),
        ("train.steps=0x10", f"train.steps=0x10: '0x10' is read as 16 (hexadecimal) {YAML11}"),
        ("train.steps=!!int 0o10", "train.steps=!!int 0o10: '0o10' is read as 8 (octal)"),
        ("train.lr=1:30.5", "train.lr=1:30.5: '1:30.5' is read as 90.5 (base-60)"),
        ("train.steps=!!int abc", "train.steps=!!int abc: 'abc' is not a valid int"),
        ("train.steps=" + "9" * 5000,
         "train.steps=" + "9" * 48 + "... (5,012 characters): '" + "9" * 49 + "... (5002 "
         "characters) is not a valid int (Exceeds the limit (4300 digits)"),
        ("storage=null", "storage=null: must be a path or URI (text), not null"),
        ("storage=[1,2]", "storage=[1,2]: must be a path or URI (text), not the list [1, 2]"),
        ("storage=/", "storage=/: '/' is the filesystem's root: give a directory"),
        ("storage=/tmp/..", "storage=/tmp/..: '/tmp/..' is the filesystem's root"),
        ('storage="a\\0b"', "storage=\"a\\0b\": 'a\\x00b': a path or URI has no unprintable"),
        ("storage=a\x1bb", "storage=a\\x1bb: not a YAML value (unacceptable character #x001b"),
        ("storage=$DIDRAY_UNSET_IN_TESTS/r",
         "storage=$DIDRAY_UNSET_IN_TESTS/r: '$DIDRAY_UNSET_IN_TESTS/r': the environment "
         "variable DIDRAY_UNSET_IN_TESTS is not set"),
        ("name=cache", "name=cache: `cache` is reserved: <storage>/cache/ is the store"),
        ("name=CACHE", "name=CACHE: `CACHE` is reserved"),
        ("name=" + "a" * 129, "name=" + "a" * 55 + "... (134 characters): must be at most "
         "128 characters"),
        ("train.lr=1e308", "train.lr=1e308: must be <= 10 (got '1e308')"),
        ("search.beta=[1e-300]", "search.beta=[1e-300]: must be >= 0.0001 (got '1e-300')"),
        ("regimes[1].tau=1e-300", "regimes[1].tau=1e-300: must be >= 0.0001 (got '1e-300')"),
        ("regimes[1].beta_data=1e5", "regimes[1].beta_data=1e5: must be <= 10,000 (got '1e5')"),
        ("sampler.temperature=0", "sampler.temperature=0: must be >= 0.0001 (got 0)"),
        ("search.regime=[]", "search.regime=[]: must have at least 1 item(s)"),
    ],
)
def test_a_bad_value_exits_2_naming_the_override(override, line, capsys):
    assert main(["validate", str(CI), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{CI}: 1 error(s)\n  {line}"), err


def test_values_at_the_limits_are_taken():
    sweep = load_sweep(CI, ["train.steps=1_000", "train.lr=10", "search.beta=[0.0001,10000]",
                            "sampler.temperature=0.0001", "name=" + "a" * 128,
                            "search.regime=[pg]", "name=cached"])
    assert sweep.train.steps == 1000 and sweep.train.lr == 10
    assert sweep.search.beta == [1e-4, 1e4] and sweep.sampler.temperature == 1e-4
    assert sweep.name == "cached"


def test_storage_expands_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("DIDRAY_TEST_ROOT", str(tmp_path))
    assert load_sweep(CI, ["storage=~/r"]).storage == str(Path.home() / "r")
    assert load_sweep(CI, ["storage=$DIDRAY_TEST_ROOT/r"]).storage == f"{tmp_path}/r"
    assert load_sweep(CI, ["storage=${DIDRAY_TEST_ROOT}/r"]).storage == f"{tmp_path}/r"
    assert load_sweep(CI, [f"storage=file://{tmp_path}"]).storage == str(tmp_path)
    assert Storage.of("$DIDRAY_TEST_ROOT").local == tmp_path  # --storage too


def test_the_store_directory_is_a_reserved_name(tmp_path):
    # A sweep named like the store would write its results into the shared cache.
    assert Store(Storage.of(tmp_path)).root.name in RESERVED_NAMES
