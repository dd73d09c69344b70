"""The EST server: TLS, client authentication, RFC 7030 routes, error mapping, logging."""
