"""The command line as a user types it: in-process through ``pdenas.cli.main``, and as real processes,
with the output redirected and in a pseudo-terminal (where a person sees the live display)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pdenas.cli import main

from .commands import run_pdenas_in_terminal
from .search.conftest import TINY


@pytest.fixture(scope="module")
def terminal_study(tmp_path_factory: pytest.TempPathFactory):
    """The README's main command, ``pdenas search``, run as a person runs it: in a terminal."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(trials=2, epochs=1, subset=120))
    directory = root / "study"
    return directory, run_pdenas_in_terminal("search", "--config", str(config), "--study-dir", str(directory))


def test_search_in_a_terminal_draws_the_live_display_and_finishes(terminal_study):
    directory, proc = terminal_study
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "Error" not in out
    assert "pdenas search 2/2 trials finished" in out and "Pareto set so far" in out
    assert f"report: {directory / 'report.html'}" in out and (directory / "report.html").is_file()


STUDY_COMMANDS = [("status", "2 complete (target 2 finished)"), ("show", "Pareto set of resnet_tiny"), ("report", "report: ")]


@pytest.mark.parametrize(("command", "expected"), STUDY_COMMANDS)
def test_study_commands_in_a_terminal(terminal_study, command: str, expected: str):
    directory, _ = terminal_study
    proc = run_pdenas_in_terminal(command, str(directory))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert expected in proc.stdout and "Traceback" not in proc.stdout


@pytest.mark.parametrize(("command", "expected"), STUDY_COMMANDS)
def test_study_commands_redirected(terminal_study, command: str, expected: str, capsys):
    directory, _ = terminal_study
    assert main([command, str(directory)]) == 0
    captured = capsys.readouterr()
    assert expected in captured.out and captured.err == ""


def test_info_prints_layers_params_and_both_mac_figures(capsys):
    assert main(["info", "--model", "resnet32_global"]) == 0
    out = capsys.readouterr().out
    assert "161,402 params" in out
    assert "16.68M MACs (honest)" in out and "15.24M" in out
    assert "layer3" in out and "K=1 dt=0.2 C=64" in out


def test_info_lists_stages_and_what_the_paper_plan_saves(capsys):
    assert main(["info", "--model", "resnet20", "--input", "1x28x36"]) == 0
    out = capsys.readouterr().out
    assert "28x36" in out and "layer2" in out
    assert "the paper's plan" in out and "x fewer" in out


@pytest.mark.parametrize(("model", "suggestion"), [("resnet23", "resnet32"), ("rsenet_tiny", "resnet_tiny"), ("zzz", None)])
def test_unknown_model_is_one_line_with_the_closest_name(model, suggestion, capsys):
    assert main(["info", "--model", model]) == 2
    line = _one_line(capsys)
    hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
    assert line.startswith(f"pdenas: error: unknown model '{model}'{hint}; --model takes a zoo name (resnet20, ")
    assert ("did you mean" in line) == (suggestion is not None)


def test_bad_input_size(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--input", "32x32"])
    assert "argument --input: must look like 3x32x32" in capsys.readouterr().err


SQLITE = "sqlite:///{tmp}/shared.db"
BAD_FLAGS = [
    (["search", "--workers", "0"], "argument --workers: must be a whole number >= 1, got '0'"),
    (["worker", "--workers", "-2"], "argument --workers: must be a whole number >= 1, got '-2'"),
    (["search", "--trials", "0"], "argument --trials: must be a whole number >= 1, got '0'"),
    (["search", "--trials", "three"], "argument --trials: must be a whole number >= 1, got 'three'"),
    (["search", "--epochs", "0"], "argument --epochs: must be a whole number >= 1, got '0'"),
    (["search", "--subset", "0"], "argument --subset: must be a whole number >= 1, got '0'"),
    (["search", "--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
    (["search", "--seed", "4294967296"], "'seed' must be a whole number in [0, 2147483648), got 4294967296"),
    (["search", "--max-macs", "-1"], "argument --max-macs: must be a number > 0"),
    (["search", "--max-macs", "0%"], "argument --max-macs: must be a number > 0"),
    (["search", "--max-macs", "nan"], "argument --max-macs: must be a number > 0"),
    (["search", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["search", "--study-name", " "], "argument --study-name: must not be empty"),
    (["search", "--storage", SQLITE, "--heartbeat", "0"], "argument --heartbeat: must be a whole number >= 1, got '0'"),
    (["search", "--storage", SQLITE, "--heartbeat", "-5"], "argument --heartbeat: must be a whole number >= 1, got '-5'"),
    (["search", "--storage", SQLITE, "--grace-period", "0"], "argument --grace-period: must be a whole number >= 1"),
    (["search", "--storage", SQLITE, "--heartbeat", "5", "--grace-period", "5"],
     "--grace-period (5 s) must be longer than --heartbeat (5 s)"),
    (["search", "--storage", SQLITE, "--max-retry", "-1"], "argument --max-retry: must be a whole number >= 0"),
    (["search", "--storage", SQLITE, "--reconnect", "-1"], "argument --reconnect: must be a number of seconds >= 0"),
    (["search", "--heartbeat", "5"], "--heartbeat apply to a shared study (--storage URL) only"),
    pytest.param(["search", "--device", "cuda"], "device 'cuda' was asked for but CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["info", "--num-classes", "0"], "argument --num-classes: must be a whole number >= 1, got '0'"),
    (["info", "--input", "0x32x32"], "argument --input: must look like 3x32x32"),
    (["export", "{tmp}/study", "--epochs", "-1"], "argument --epochs: must be a whole number >= 0, got '-1'"),
    (["export", "{tmp}/study", "--format", "tflite"], "unknown export format 'tflite'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_flag_out_of_range_is_one_line_before_any_work(argv, message, tmp_path, capsys):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    if argv[0] in ("search", "worker"):
        argv += ["--study-dir", str(tmp_path / "study")]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    assert code == 2
    line = _one_line(capsys)
    assert message in line and line.startswith(("pdenas: error: ", f"pdenas {argv[0]}: error: "))
    assert list(tmp_path.iterdir()) == []  # nothing written: no study folder, no database


def test_status_of_a_folder_that_is_not_a_study(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "is not a pdenas study directory" in capsys.readouterr().err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_status_only_reads_and_names_what_is_missing(tmp_path, capsys):
    """A folder with config.json but no study, and a study name the journal lacks: one line each, and
    nothing written (opening a study to read it never creates files)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"format": 1, "storage": None, "study_name": "pdenas"}))
    assert main(["status", str(empty)]) == 2
    assert _one_line(capsys) == (f"pdenas: error: {empty} has config.json but no study.log: the study was never started "
                                 f"or its file was moved; rerun pdenas search --study-dir {empty}")
    assert [p.name for p in empty.iterdir()] == ["config.json"]

    renamed = tmp_path / "renamed"
    shutil.copytree(Path(__file__).parent / "search" / "data" / "study-0.1.0", renamed)
    config = json.loads((renamed / "config.json").read_text())
    (renamed / "config.json").write_text(json.dumps({**config, "study_name": "nope"}))
    before = (renamed / "study.log").read_bytes()
    assert main(["status", str(renamed)]) == 2
    assert _one_line(capsys).startswith(f"pdenas: error: study 'nope' is not in journal file {renamed / 'study.log'}")
    assert (renamed / "study.log").read_bytes() == before and not (renamed / "study.log.lock").exists()


def test_messages_with_square_brackets_print_as_they_are(tmp_path, capsys):
    """rich would read "[onnx]" or "[bold]" in a message as markup and swallow it."""
    folder = tmp_path / "runs[onnx]" / "[bold]x[/bold]"
    assert main(["status", str(folder)]) == 2
    assert _one_line(capsys).startswith(f"pdenas: error: {folder} is not a pdenas study directory")
    assert main(["info", "--model", "[red]resnet23[/red]"]) == 2
    assert "unknown model '[red]resnet23[/red]'" in _one_line(capsys)
