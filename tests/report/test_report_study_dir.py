"""Opening a study directory, its errors, and storage URLs never shown with their password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdenas._urls import mask_url
from pdenas.report import ReportError, open_study, write_report
from pdenas.report import build_report_data
from pdenas.search import FORMAT_VERSION, StudyRecord

from .report_studies import StudyBuilder


def test_open_study_reads_config_and_journal(search_study: StudyBuilder) -> None:
    study = open_study(search_study.directory)
    assert study.study_name == "pdenas"
    assert len(study.trials) == len(search_study.study.trials)
    assert StudyRecord.from_study(study).config["model"] == "resnet_tiny"


def test_not_a_study_directory(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as info:
        open_study(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is not a pdenas study directory (no config.json): run pdenas search --study-dir {tmp_path} first"
    )
    with pytest.raises(ReportError, match="is not a pdenas study directory"):
        write_report(tmp_path / "missing")


def test_config_without_journal(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": FORMAT_VERSION, "storage": None, "study_name": "pdenas"}))
    with pytest.raises(ReportError, match="has config.json but no study.log: the study was never started"):
        open_study(tmp_path)


def test_unknown_study_name(search_study: StudyBuilder, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    other.mkdir()
    (other / "study.log").write_bytes((search_study.directory / "study.log").read_bytes())
    (other / "config.json").write_text(json.dumps({"format": FORMAT_VERSION, "storage": None, "study_name": "nope"}))
    with pytest.raises(ReportError, match="study 'nope' is not in journal file .*: check 'study_name' in"):
        open_study(other)


def test_storage_password_is_masked_in_errors(tmp_path: Path) -> None:
    url = "postgresql://user:secret@127.0.0.1:1/db"  # nothing listens on port 1: refused at once
    (tmp_path / "config.json").write_text(json.dumps({"format": FORMAT_VERSION, "storage": url, "study_name": "pdenas"}))
    with pytest.raises(ReportError) as info:
        open_study(tmp_path)
    assert "secret" not in str(info.value)
    assert "postgresql://user:***@127.0.0.1:1/db" in str(info.value)


def test_storage_password_is_masked_in_settings(search_study: StudyBuilder, tmp_path: Path) -> None:
    directory = tmp_path / "pg"
    directory.mkdir()
    url = "postgresql://user:secret@db.example:5432/studies"
    (directory / "config.json").write_text(json.dumps({"format": FORMAT_VERSION, "storage": url, "study_name": "pdenas"}))
    data = build_report_data(search_study.study, study_dir=directory)
    settings = dict(data.settings)
    assert settings["storage"] == "postgresql://user:***@db.example:5432/studies"
    assert all("secret" not in value for _, value in data.settings)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://user:s%40cret@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
        ("redis://:secret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://user@host/db?password=secret&sslmode=require", "postgresql://user@host/db?password=***&sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///runs/study.db", "sqlite:///runs/study.db"),
        ("resnet20", "resnet20"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
