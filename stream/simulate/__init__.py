"""Simulated storefront traffic: a deterministic model of visitors and a driver that
sends it to the collector (or Kafka) at a given rate.

    model.py    who visits and what kind of session they have (pure, seeded)
    session.py  one session written out as Segment calls
    personas.py visitor personas; catalog.py the shop's products, agents, channels
    send.py     HTTP and Kafka senders with retries; driver.py pacing and the report
"""

from stream.simulate.driver import SimulationReport, run_simulation
from stream.simulate.model import Mix, generate, generate_timed

__all__ = ["Mix", "SimulationReport", "generate", "generate_timed", "run_simulation"]
