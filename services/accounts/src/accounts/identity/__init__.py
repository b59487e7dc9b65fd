"""Identity: accounts, sign-in, sessions, passwords and reset codes, and their rate limits."""
