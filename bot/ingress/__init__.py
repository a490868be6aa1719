"""Receiving GitHub's webhooks: verify, store durably, then hand each delivery to its handlers."""
