"""Reading sweep files: every failure is one paragraph naming the file and its line or field."""

from pathlib import Path

import pytest

from didray.cli import main
from didray.config.load import MAX_BYTES

ROOT = Path(__file__).parents[2]
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.yaml"))


def expected(path: Path) -> str:
    """A corpus file's first line is `# expect: <the one error line it must produce>`."""
    return path.read_bytes().split(b"\n", 1)[0].decode("ascii").removeprefix("# expect: ")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_file_is_refused_naming_its_line_or_field(path, capsys):
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == f"{path}: 1 error(s)\n  {expected(path)}\n"


def test_corpus_holds_the_nastiest_cases():
    names = {p.stem for p in CORPUS}
    assert {"not-utf8-latin1", "binary-nul", "tag-int-abc", "tag-bool-maybe", "timestamp-feb-30",
            "deep-nesting", "int-5000-digits", "duplicate-key", "alias-billion-laughs",
            "lr-true", "lr-inf", "seed-2-63", "batch-1-two-workers"} <= names


def test_size_limit_is_exact(tmp_path, capsys):
    text = (ROOT / "sweeps/ci.yaml").read_bytes()
    padded = tmp_path / "padded.yaml"
    padded.write_bytes(text + b"#" * (MAX_BYTES - len(text)))
    assert main(["validate", str(padded)]) == 0
    padded.write_bytes(text + b"#" * (MAX_BYTES - len(text) + 1))
    assert main(["validate", str(padded)]) == 2
    assert capsys.readouterr().err.endswith(
        "padded.yaml: 1 error(s)\n  larger than 1,048,576 bytes: not a sweep file\n")


def test_directory_is_not_a_sweep_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"{tmp_path}: 1 error(s)\n  cannot read: Is a directory\n"
