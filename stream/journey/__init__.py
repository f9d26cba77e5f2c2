"""The journey core: sessions, stages and triggers of one visitor, as pure functions.

The Faust shell decodes a visitor's state, calls apply() per event and tick() per
watermark, publishes what the Outcome holds, and stores Outcome.state when not None.
"""

from stream.journey.machine import STAGES_PATH, StageMachine, StageMachineError
from stream.journey.merge import merge
from stream.journey.process import Outcome, apply, due, tick
from stream.journey.state import SessionState, VisitorState, decode_state, encode_state

__all__ = [
    "STAGES_PATH",
    "Outcome",
    "SessionState",
    "StageMachine",
    "StageMachineError",
    "VisitorState",
    "apply",
    "decode_state",
    "due",
    "encode_state",
    "merge",
    "tick",
]
