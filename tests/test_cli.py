"""The command line as a user types it (in-process, through ``pdenas.cli.main``)."""

import pytest

from pdenas.cli import main


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


def test_unknown_model_is_one_line(capsys):
    assert main(["info", "--model", "resnet23"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdenas: error: unknown model 'resnet23'") or "did you mean" in err
    assert "Traceback" not in err


def test_bad_input_size(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--input", "32x32"])
    assert "--input must look like 3x32x32" in capsys.readouterr().err


def test_status_of_a_folder_that_is_not_a_study(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "is not a pdenas study directory" in capsys.readouterr().err
