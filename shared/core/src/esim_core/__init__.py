"""Messaging and service plumbing shared by every service."""
