"""The pure routing core: a request view in, a Decision out. No Twisted, no I/O."""
