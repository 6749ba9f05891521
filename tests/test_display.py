"""The progress helper's plain output, what Ray job logs and Ray task output show."""

import io

from didray.display import Progress, checkpoints


def test_plain_progress_prints_each_quarter_once():
    out = io.StringIO()  # not a terminal
    with Progress("pi_ref: SFT steps", 10, out) as progress:
        for _ in range(4):
            progress.update()
        progress.update(6)  # past two checkpoints at once: one line, the count reached
    assert out.getvalue().splitlines() == [
        "[didray] pi_ref: SFT steps: 3/10", "[didray] pi_ref: SFT steps: 10/10"]


def test_plain_progress_lines_for_a_given_total():
    out = io.StringIO()
    with Progress("sampler: prompts", 300, out) as progress:
        for _ in range(300):
            progress.update()
    assert out.getvalue().splitlines() == [
        f"[didray] sampler: prompts: {k}/300" for k in (75, 150, 225, 300)]


def test_checkpoints_of_small_totals():
    assert checkpoints(2) == [1, 2]
    assert checkpoints(0) == []
    assert checkpoints(7) == [2, 4, 6, 7]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_instead_of_lines():
    out = Terminal()
    with Progress("fit", 8, out) as progress:
        progress.update(8)
    text = out.getvalue()
    assert "\r[didray] fit:   0%|" in text and "| 0/8 [" in text  # tqdm's bar, drawn in place
    assert "fit: 8/8" not in text
