"""Operations: Prometheus metrics, the admin listener, JSON logs, the access log."""
