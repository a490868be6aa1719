"""Operator commands: dev, demo, doctor, register and send."""
