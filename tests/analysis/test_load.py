"""Loading results directories: declared schemas, several sweeps, and bad input named."""

import threading

import polars as pl
import pyarrow.parquet as pq
import pytest

from didray.analysis.load import EVALS_SCHEMA, STEPS_SCHEMA, TRIALS_SCHEMA, load
from didray.errors import BadInput
from didray.files import seal_path, sealed_write, write_json


def test_every_frame_has_its_declared_schema(sweep_dir):
    results = load(sweep_dir)
    trials = results.trials.collect()
    assert trials.schema == TRIALS_SCHEMA
    assert results.steps.collect().schema == STEPS_SCHEMA
    assert results.evals.collect().schema == EVALS_SCHEMA
    assert trials["sweep"].unique().to_list() == ["partial"]
    assert trials["node_id"].null_count() == trials.height  # absent in the file: typed nulls
    assert trials.filter(pl.col("status") == "ERROR")["error"].to_list() == ["boom"]


def test_evals_are_long_with_exact_values(sweep_dir):
    evals = load(sweep_dir).evals.filter(pl.col("trial_id") == "t0").collect()
    values = dict(zip(evals["metric"], evals["estimate"], strict=True))
    assert values == {"did_entropy": 1.0, "instruction_score": 0.5, "qa_accuracy": 1.0,
                      "chosen_displacement": -1.0}
    assert set(evals["estimator"]) == {"exact"} and evals["exact"].equals(evals["estimate"],
                                                                           check_names=False)


def test_evals_parquet_is_loaded_with_the_trial_axes(sweep_dir):
    pl.DataFrame({"trial_id": ["t0", "t6"], "estimator": ["plugin", "snis"], "k": [32, 32],
                  "proposal": [None, "pi_ref"], "estimate": [0.9, 5.2], "spread_low": [0.8, 5.0],
                  "spread_high": [1.0, 5.4], "exact": [1.0, 5.0]}
                 ).write_parquet(sweep_dir / "evals.parquet")
    # A join does not keep row order; the frame is raw data, so compare it sorted.
    evals = (load(sweep_dir).evals.filter(pl.col("estimator") != "exact")
             .sort("trial_id").collect())
    assert evals.select("trial_id", "regime", "beta", "metric", "k", "estimate").rows() == [
        ("t0", "pg", 0.1, "did_entropy", 32, 0.9), ("t6", "pl", 0.1, "did_entropy", 32, 5.2)]


def test_several_sweeps_load_together(sweep_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    pl.read_parquet(sweep_dir / "trials.parquet").head(2).write_parquet(other / "trials.parquet")
    trials = load([sweep_dir, other]).trials.collect()
    assert trials.group_by("sweep").len().sort("sweep").rows() == [("other", 2),
                                                                   ("partial", 8)]


def test_a_sweep_without_steps_yet(sweep_dir):
    (sweep_dir / "steps.parquet").unlink()
    assert load(sweep_dir).steps.collect().height == 0
    pl.DataFrame().write_parquet(sweep_dir / "steps.parquet")  # written before any report
    assert load(sweep_dir).steps.collect().height == 0


def test_no_results_is_bad_input_naming_the_path(tmp_path):
    with pytest.raises(BadInput, match=f"{tmp_path}: no results here"):
        load(tmp_path)
    with pytest.raises(BadInput, match="nowhere: no such results directory"):
        load(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_parquet_is_bad_input_naming_the_file(sweep_dir, damage):
    path = sweep_dir / "steps.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not parquet at all")
    with pytest.raises(BadInput, match=f"{path}: not a readable Parquet file") as caught:
        load(sweep_dir)
    assert "\n" not in str(caught.value)


def test_two_sweeps_with_one_name_are_refused(sweep_dir, tmp_path):
    twin = tmp_path / "elsewhere" / "partial"
    twin.mkdir(parents=True)
    (twin / "trials.parquet").write_bytes((sweep_dir / "trials.parquet").read_bytes())
    with pytest.raises(BadInput, match="share the name 'partial'"):
        load([sweep_dir, twin])


def test_unregistered_columns_pass_through_with_their_values(sweep_dir):
    """A column didray does not know (a new search axis, a newer didray's metric) is kept."""
    trials = pl.read_parquet(sweep_dir / "trials.parquet")
    trials.with_columns(**{"train.lr": pl.Series([1e-3 * (i + 1) for i in range(8)])}
                        ).write_parquet(sweep_dir / "trials.parquet")
    loaded = load(sweep_dir).trials.sort("trial_id").collect()
    assert list(loaded.schema)[: len(TRIALS_SCHEMA)] == list(TRIALS_SCHEMA)
    assert loaded["train.lr"].to_list() == [1e-3 * (i + 1) for i in range(8)]


def test_per_prompt_estimates_keep_their_prompt(sweep_dir):
    pl.DataFrame({"trial_id": ["t0", "t0"], "prompt_id": [3, 5], "estimator": ["snis"] * 2,
                  "k": [8, 8], "proposal": ["ref"] * 2, "estimate": [1.5, 2.5],
                  "spread_low": [1.0, 2.0], "spread_high": [2.0, 3.0], "exact": [None, None],
                  "beta": [0.1, 0.1], "regime": ["pg", "pg"], "seed": [0, 0]}
                 ).write_parquet(sweep_dir / "evals.parquet")
    rows = (load(sweep_dir).evals.filter(pl.col("estimator") == "snis").sort("prompt_id")
            .select("prompt_id", "estimate", "regime").collect().rows())
    assert rows == [(3, 1.5, "pg"), (5, 2.5, "pg")]


def test_several_sweeps_with_different_extra_columns_load_together(sweep_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (pl.read_parquet(sweep_dir / "trials.parquet").head(2)
     .with_columns(extra=pl.lit(7)).write_parquet(other / "trials.parquet"))
    trials = load([sweep_dir, other]).trials.collect()
    assert trials.height == 10
    assert trials.group_by("sweep").agg(pl.col("extra").sum()).sort("sweep").rows() == [
        ("other", 14), ("partial", 0)]


def test_a_corrupt_manifest_is_named(sweep_dir):
    (sweep_dir / "manifest.json").write_text('{"version": 2, "sweep": {"na')
    with pytest.raises(BadInput, match="partial/manifest.json: not readable JSON"):
        load(sweep_dir)


def middle_of_column(path, column: str) -> int:
    """The byte offset of the middle of `column`'s data in a Parquet file."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(j) for j in range(meta.num_columns)
                 if meta.column(j).path_in_schema == column)
    return chunk.data_page_offset + chunk.total_compressed_size // 2


def flip(path, offset: int) -> bytes:
    """Flip one bit of `path` at `offset`; returns the good bytes."""
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[offset] ^= 0x01
    path.write_bytes(bytes(flipped))
    return good


def test_a_flipped_byte_in_a_written_table_is_refused_naming_the_file(sealed_sweep_dir):
    sweep = sealed_sweep_dir
    assert load(sweep).trials.collect()["did_entropy"].sum() == 22.0  # untouched: loads
    path = sweep / "trials.parquet"
    good = flip(path, middle_of_column(path, "did_entropy"))
    # Checked before any byte is decoded: a flipped byte can read as a plausible wrong value,
    # or make the Parquet reader abort the process.
    with pytest.raises(BadInput, match=f"{path}: changed after didray wrote it "
                                       r"\(trials.parquet differs from what was written"):
        load(sweep)
    path.write_bytes(good)
    assert load(sweep).trials.collect()["did_entropy"].sum() == 22.0


def test_a_table_whose_seal_is_gone_is_refused_while_the_sweep_has_seals(sealed_sweep_dir):
    """Deleting the seal must not switch the check off: steps.parquet is still sealed, so
    trials.parquet must be (docs/design.md §3.3), and its flipped byte is never read."""
    path = sealed_sweep_dir / "trials.parquet"
    flip(path, middle_of_column(path, "did_entropy"))
    seal_path(path).unlink()
    with pytest.raises(BadInput, match=f"{path}: changed after didray wrote it \\(trials.parquet "
                                       "has no readable trials.parquet.integrity.json"):
        load(sealed_sweep_dir)
    seal_path(path).write_text("[12, ")  # unreadable: the same
    with pytest.raises(BadInput, match="has no readable trials.parquet.integrity.json"):
        load(sealed_sweep_dir)


def test_a_sweep_stripped_of_every_seal_is_refused_when_its_manifest_says_sealed(
        sealed_sweep_dir):
    """Without its manifest's word, a sweep with no seal left reads as an older didray's
    and loads unchecked: the flipped DID entropy would be read as written."""
    write_json({"version": 2, "sealed": True}, sealed_sweep_dir / "manifest.json")
    path = sealed_sweep_dir / "trials.parquet"
    flip(path, middle_of_column(path, "did_entropy"))
    for table in ("trials.parquet", "steps.parquet"):
        seal_path(sealed_sweep_dir / table).unlink()
    with pytest.raises(BadInput, match=f"{path}: changed after didray wrote it \\(trials.parquet "
                                       "has no readable trials.parquet.integrity.json"):
        load(sealed_sweep_dir)


def test_an_undecodable_table_of_an_unsealed_sweep_is_named_not_a_traceback(sealed_sweep_dir):
    """A sweep that sealed nothing (an older didray) loads unchecked, but a page that no longer
    decompresses is found at load, one paragraph naming the file, not mid-query."""
    for table in ("trials.parquet", "steps.parquet"):
        seal_path(sealed_sweep_dir / table).unlink()
    assert load(sealed_sweep_dir).trials.collect()["did_entropy"].sum() == 22.0
    path = sealed_sweep_dir / "steps.parquet"
    flip(path, path.read_bytes().index(ZSTD_MAGIC))
    with pytest.raises(BadInput, match=f"{path}: not a readable Parquet file") as caught:
        load(sealed_sweep_dir)
    assert "\n" not in str(caught.value)


ZSTD_MAGIC = bytes.fromhex("28b52ffd")  # the first zstd frame: a page polars compressed


def test_a_table_rewritten_while_it_is_read_loads_whole(sealed_sweep_dir):
    """A running sweep replaces its tables (sealed_write) while `didray analyze` reads them:
    every load sees one whole version, never one version's footer with another's pages (the
    reader used to check the file, then open it again lazily: 'Invalid thrift' and polars
    panics, 1 of 59 analyze calls during an --extend)."""
    path = sealed_sweep_dir / "trials.parquet"
    versions = [pl.read_parquet(path)]
    versions.append(pl.concat([versions[0]] * 40))  # a larger file: a mixed read cannot parse
    done = threading.Event()

    def rewrite():
        i = 0
        while not done.is_set():
            sealed_write(path, versions[i % 2].write_parquet)
            i += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        heights = {load(sealed_sweep_dir).trials.collect().height for _ in range(60)}
    finally:
        done.set()
        writer.join()
    assert heights <= {versions[0].height, versions[1].height}
