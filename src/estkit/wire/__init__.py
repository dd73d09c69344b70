"""RFC 7030 / RFC 8951 encodings: pure functions from bytes to typed objects and back, no I/O."""
