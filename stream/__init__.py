"""Real-time customer-journey clickstream processor."""

__version__ = "0.1.0"
