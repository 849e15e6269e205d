"""The one command-line helper for dataclass configs (`models.config_utils.add_dataclass_args`)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from agents.ppo import parse_args
from models.config_utils import add_dataclass_args


@dataclass
class Demo:
    out: str
    """where to write"""
    quick: bool = False
    """a smaller run"""
    progress: bool = True
    """show a bar"""
    window_seconds: float | None = None
    """KV-cache window"""
    channels: tuple[int, ...] = (16, 32)
    """conv widths"""
    steps: int = 3


def parse(argv: list[str]) -> Demo:
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Demo)
    return Demo(**vars(p.parse_args(argv)))


def test_defaults_types_and_help():
    assert parse(["--out", "x"]) == Demo(out="x")
    d = parse(["--out", "x", "--window-seconds", "2.5", "--channels", "4,8,8", "--steps", "7"])
    assert d.window_seconds == 2.5 and d.channels == (4, 8, 8) and d.steps == 7
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Demo)
    assert "KV-cache window" in p.format_help()
    with pytest.raises(SystemExit):  # a field without a default is required
        parse([])


def test_bools_take_flag_and_no_flag_everywhere():
    assert parse(["--out", "x", "--quick"]).quick is True  # the spelling the example scripts always had
    assert parse(["--out", "x", "--no-progress"]).progress is False  # a True default can be switched off
    assert parse(["--out", "x", "--no-quick", "--progress"]) == Demo(out="x")
    a = parse_args(["--no-progress", "--channels", "8,16", "--total-steps", "100"])  # agents.ppo, same helper
    assert a.progress is False and a.channels == (8, 16) and a.total_steps == 100
    with pytest.raises(SystemExit):
        parse_args(["--env", "moon"])  # choices still checked
    with pytest.raises(SystemExit):
        parse_args(["--batch-size", "4"])  # computed fields are not flags
