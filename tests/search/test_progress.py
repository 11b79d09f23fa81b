"""The live display of a search on a terminal (rich's Live), fed by a real search."""

from __future__ import annotations

import io

from rich.console import Console

from pdenas.search import SearchConfig, SearchProgress, StudyLocation, run_worker

from ..commands import strip_ansi


def test_the_live_display_says_why_the_search_stopped(tiny_yaml, tmp_path, one_thread):
    """Every candidate diverges: after too many failures in a run the search stops, and a person at the
    terminal is told why, in the live display and as a line above it. (The original is given, so trial
    0 scores it without training; the candidates' fine-tuning diverges.)"""
    import torch

    from pdenas import create_model

    torch.save(create_model("resnet_tiny", in_channels=1).state_dict(), tmp_path / "w.pt")
    path = tiny_yaml(trials=2, subset=120, extra=f"weights: {tmp_path / 'w.pt'}\n")
    path.write_text(path.read_text().replace("lr: 0.05", "lr: 1.0e+8"))
    config = SearchConfig.from_yaml(path)
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=120, color_system=None)
    with SearchProgress(config.trials, console=terminal) as progress:
        assert progress.live_mode
        counts = run_worker(StudyLocation(tmp_path / "s"), config, on_event=progress, max_failures=2)
    assert (counts.completed, counts.failed) == (1, 2)  # the original, then two candidates
    shown = strip_ansi(out.getvalue())
    reason = "2 trials failed in this run; see the failure reasons with pdenas status"
    assert f"search stopped: {reason}" in shown
    assert shown.rstrip().endswith(f"search stopped: {reason}")  # the display's last state says it too


def test_log_lines_print_square_brackets_as_they_are():
    out = io.StringIO()
    progress = SearchProgress(3, console=Console(file=out, width=200))  # not a terminal: a line per event
    progress("fail", {"trial": 4, "reason": "RuntimeError: shape [bold]mismatch[/bold] in layer[onnx]"})
    assert out.getvalue() == "trial 4 failed: RuntimeError: shape [bold]mismatch[/bold] in layer[onnx]\n"
