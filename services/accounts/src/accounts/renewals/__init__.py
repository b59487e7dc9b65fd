"""Renewals: how a renewal moves from its request to its end."""
