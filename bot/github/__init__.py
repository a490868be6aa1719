"""Talking to GitHub: app auth and clients, permissions, checks, tracking comments, command text."""
