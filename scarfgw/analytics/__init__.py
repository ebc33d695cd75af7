"""Analytics: the event record, the batched writer with its disk spool, and the sinks."""
