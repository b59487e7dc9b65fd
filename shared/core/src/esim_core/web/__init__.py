"""The HTTP surface every service shares: problem details, operator auth, the server."""
