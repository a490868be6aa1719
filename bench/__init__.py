"""Benchmarks of box-bot against its GitHub and Box simulators; run each with `python -m`."""
