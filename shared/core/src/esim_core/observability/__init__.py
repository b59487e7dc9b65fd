"""Logs, metrics, scrape-time gauges and traces, the same for every service."""
