"""Real-time customer-journey clickstream processor."""

from stream import compiled

__version__ = "0.1.0"

# Before any core module is imported: the compiled core when it matches the sources
# (stream/compiled.py).
compiled.install()
