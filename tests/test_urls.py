"""Storage URLs shown without their secrets: SQLAlchemy's masking of the password, plus the query keys
that carry one (tests/report/test_report_study_dir.py checks the common URLs)."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from pdenas._urls import mask_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:secret@host/db",
        "postgresql+psycopg://us%40er:p%2Fw%3Fx@db.example:5432/studies",
        "mysql+pymysql://root:hunter22@[::1]:3306/optuna",
    ],
)
def test_the_password_is_hidden_as_sqlalchemy_renders_it(url: str) -> None:
    assert mask_url(url) == make_url(url).render_as_string(hide_password=True)
    assert make_url(url).password not in mask_url(url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u@h/db?sslpassword=k3y&sslmode=require", "postgresql://u@h/db?sslpassword=***&sslmode=require"),
        ("postgresql://u@h/db?PASSWORD=x&application_name=pdenas", "postgresql://u@h/db?PASSWORD=***&application_name=pdenas"),
        ("postgresql://u:pa?ss@h/db?token=t0k&a=1", "postgresql://u:***@h/db?token=***&a=1"),
        ("postgresql://u:secret@h:54x2/db", "postgresql://u:***@h:54x2/db"),  # a typo in the port
        ("post-gres://u:secret@h/db", "post-gres://u:***@h/db"),  # a scheme SQLAlchemy does not parse
    ],
    ids=["sslpassword", "upper-case-key", "question-mark-in-password", "bad-port", "bad-scheme"],
)
def test_secrets_in_the_query_and_in_urls_sqlalchemy_cannot_parse(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "text",
    ["resnet20", "", "runs/study", "no password: postgresql://u@h/db", "sqlite:///runs/a.db?timeout=5", "a://b:c"],
)
def test_text_without_credentials_comes_back_unchanged(text: str) -> None:
    assert mask_url(text) == text
