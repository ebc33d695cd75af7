"""The Twisted shell around the pure core: HTTP in, decisions rendered, events out."""
