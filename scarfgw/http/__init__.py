"""The HTTP/1.1 channel on llhttp and the request object the rest of the shell sees."""
