"""Multipath TCP (RFC 8684 "v1", and the RFC 6824 "v0" dialect): the suboption codec
(`options`), the key/token/HMAC/checksum primitives (`crypto`), and, above them, the
per-connection control block, subflows, path manager and scheduler."""
