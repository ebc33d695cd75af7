"""Insights, the read side of the events: engines, ingest, counting, API, badges, dashboard."""
