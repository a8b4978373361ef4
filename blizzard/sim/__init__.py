"""Deterministic simulation of whole replicas (see :mod:`blizzard.sim.simulator`).

Above the structures in the layers: a simulated replica runs the node
driver, the Raft log in a pool, the session table, the registry and every
structure, on crash-simulating media, over a simulated network.
"""

from blizzard.sim.checks import SafetyViolation
from blizzard.sim.simulator import FaultRates, LivenessFailure, SimResult, Simulator

__all__ = ["FaultRates", "LivenessFailure", "SafetyViolation", "SimResult", "Simulator"]
