"""The one exception type every wire parser raises."""


class MalformedPacket(ValueError):
    """Bytes that do not form a valid header. `reason` is a short counter-friendly tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
