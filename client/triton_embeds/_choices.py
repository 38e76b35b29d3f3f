"""`n`: several sequences per prompt, and how their choices are numbered.

The server answers a request for n > 1 sequences with responses that name
their sequence (`choice_index`). A call's choices are numbered as vLLM's
OpenAI server numbers them: prompt by prompt, the n sequences of each in
turn, so prompt p's sequence s is choice `p * n + s`.
"""

from __future__ import annotations

from typing import Any

from ._errors import InternalServerError
from ._types import Delta

# Sequences per request: the server's limit (each one is a full generation).
MAX_N = 16


def check_n(n: Any) -> int:
    """The number of sequences per prompt `n` asks for (None: one)."""
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ValueError(f"n must be an integer from 1 to {MAX_N} (sequences per prompt), not {n!r}")
    return n


def choice_number(delta: Delta, n: int) -> int:
    """The call's choice index of a delta; a sequence the call did not ask
    for is the server's error, never a silently extra choice."""
    if not 0 <= delta.choice < n:
        raise InternalServerError(f"the server sent sequence {delta.choice} of a request for n={n}")
    return delta.index * n + delta.choice
