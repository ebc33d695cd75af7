"""TLS termination: SNI contexts, ACME certificates, storage and domain verification."""
