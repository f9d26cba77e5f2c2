"""`make bench` reads the collector floor's figures from its output: the line it prints
and the pattern that parses it must agree."""

import pytest

from benchmarks.__main__ import FLOOR_LINE
from benchmarks.collector import Run, Tally
from benchmarks.collector_floor import LEVELS, report_line

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_line_parses_to_its_figures(level):
    run = Run(Tally(accepted=450_000), 15.0, 13.5, 1.8, 0.2, 80.0)
    printed = f"noise before\n{report_line(level, run)}\nnoise after\n"
    assert FLOOR_LINE.findall(printed) == [(level, "30,000", "0.0300", "0.0040")]
