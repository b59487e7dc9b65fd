"""The service's own database: engine, sessions, tables and schema migrations."""
