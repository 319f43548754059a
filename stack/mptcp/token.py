"""The token table: our MPTCP connections by local token (the kernel's
`net/mptcp/token.c`). A new connection's key is chosen so that its token is not in
use (`mptcp_token_new_request` / `mptcp_token_new_connect`, through
`crypto.generate_unique_key`); an MP_JOIN SYN names the connection it joins by token
(`mptcp_token_get_sock`)."""

from __future__ import annotations

from typing import Generic, TypeVar

C = TypeVar("C")


class TokenTable(Generic[C]):
    """token -> connection (whatever the host keeps per connection)."""

    def __init__(self) -> None:
        self._by_token: dict[int, C] = {}

    def __contains__(self, token: object) -> bool:
        return token in self._by_token

    def __len__(self) -> int:
        return len(self._by_token)

    def tokens(self) -> list[int]:
        return list(self._by_token)

    def get(self, token: int) -> C | None:
        """`mptcp_token_get_sock`: the connection a join names, if any."""
        return self._by_token.get(token)

    def add(self, token: int, conn: C) -> None:
        if token in self._by_token:
            raise KeyError(f"token {token:08x} is in use")
        self._by_token[token] = conn

    def remove(self, token: int, conn: C) -> None:
        """`mptcp_token_destroy`: forget `conn`'s token (only if it is still `conn`'s)."""
        if self._by_token.get(token) is conn:
            del self._by_token[token]
