"""The certificate authority: decides whether a request may be granted, signs, and records."""
