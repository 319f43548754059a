"""IPv6 golden vectors captured from the Linux kernel: `vectors.py`, made by `capture.py`."""
