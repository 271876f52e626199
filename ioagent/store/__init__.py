"""Durable state: the SQLite store, its single-thread async front, and the history reports."""
