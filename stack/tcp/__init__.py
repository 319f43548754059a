"""The TCP engine (RFC 9293) and its parts: sequence type, RTT estimator, congestion
control, reassembly. Sans-I/O: time comes in as `now` (seconds, float)."""
