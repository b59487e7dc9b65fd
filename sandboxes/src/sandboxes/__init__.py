"""Sandbox servers for the systems the platform cannot reach from here."""
