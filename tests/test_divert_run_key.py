"""Which hostname key ``blocklist-divert run`` resolves with (divert.cli.run_key): the one
it is given, else the default file only when it can read it. Under ExaBGP (operator's
guide, 3a) ``run`` is ExaBGP's user, whose config leaves key_file out, and which may see
the blocklist user's key (mode 0600) without reading it: the walk of that form found every
resolution failing with "cannot read key file ... Permission denied" before this."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

from divert import cli
from divert.config import DivertConfig


@pytest.fixture
def default_key(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = tmp_path / "divert.key"
    monkeypatch.setattr(cli, "DEFAULT_KEY_FILE", path)
    return path


def test_the_key_given_is_the_key(default_key: pathlib.Path, tmp_path: pathlib.Path) -> None:
    given = tmp_path / "given.key"
    default_key.write_text("x")
    assert cli.run_key(DivertConfig(key_file=given)) == given


def test_a_readable_default_is_taken(default_key: pathlib.Path) -> None:
    assert cli.run_key(DivertConfig()) is None  # no file: run only follows the store
    default_key.write_text("x")
    assert cli.run_key(DivertConfig()) == default_key


def test_a_default_this_user_cannot_read_is_no_key(
    default_key: pathlib.Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is there (the blocklist user's, 0600) but this process is another user.
    The tests run as root, which reads every file: os.access answers as that other user."""
    default_key.write_text("x")
    default_key.chmod(0o600)
    real = os.access

    def as_another_user(path: object, mode: int, **kwargs: object) -> bool:
        if pathlib.Path(str(path)) == default_key:
            return False
        return real(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli.os, "access", as_another_user)
    with caplog.at_level(logging.INFO, logger="blocklist_divert"):
        assert cli.run_key(DivertConfig()) is None
    assert "not readable by this user" in caplog.text
    assert str(default_key) in caplog.text
