"""The concern store: SQLAlchemy 2 (async) on the embedded SQLite or PostgreSQL."""
