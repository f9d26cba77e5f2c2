"""Live windowed journey metrics: pure accumulation per partition, rates from sums."""

from stream.metrics.figures import FIGURES, WINDOW_MS, window_of
from stream.metrics.windows import SETTLE_MS, WindowAccumulator, metric_row_key, settle_ms

__all__ = [
    "FIGURES",
    "SETTLE_MS",
    "WINDOW_MS",
    "WindowAccumulator",
    "metric_row_key",
    "settle_ms",
    "window_of",
]
