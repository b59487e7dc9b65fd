"""Calls to outside systems over HTTP: the pooled, timed transport and retries in a round."""
