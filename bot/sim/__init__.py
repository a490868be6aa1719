"""Simulators of GitHub and Box that run on a loopback port."""
