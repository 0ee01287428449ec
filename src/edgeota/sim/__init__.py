"""The fleet simulator: many real agents against a real server, with faults injected.

Each simulated device runs the real agent (``edgeota.agent.reconcile.Agent``) with its real
TUF, API and download clients over real HTTP; only its runtime is simulated, and the fault
plan decides its health. ``edgeota sim`` runs a staged rollout through such a fleet
(:mod:`edgeota.sim.scenario`); the server's simulated-environment gate runs a few devices
before a rollout's first phase (:mod:`edgeota.sim.gate`).
"""
