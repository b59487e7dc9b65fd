"""Unit tests of the bench's pure parts: statistics, the table, the history line, profiles."""
