"""Process wiring: the primary and its workers, listeners, signals, drain, reactor tuning."""
