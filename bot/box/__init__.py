"""Talking to Box: the API client, its errors and typed results, and the model catalogue."""
