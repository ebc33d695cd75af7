"""Request -> rules -> decision -> response: the gateway, the streaming proxy, client info."""
