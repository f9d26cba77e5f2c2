"""Live windowed journey metrics: increments per row from journey outcomes, rates from sums."""

from stream.metrics.figures import FIGURES, WINDOW_MS, window_of
from stream.metrics.windows import Delta, MetricRow, PartitionRecord, metric_row_key

__all__ = [
    "FIGURES",
    "WINDOW_MS",
    "Delta",
    "MetricRow",
    "PartitionRecord",
    "metric_row_key",
    "window_of",
]
