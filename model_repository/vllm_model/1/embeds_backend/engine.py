"""A narrow bridge to vLLM's AsyncLLM: the only module that imports vLLM's
engine API, so a vLLM upgrade touches one file."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import torch

logger = logging.getLogger(__name__)


class EngineBridge:
    def __init__(self, engine_args: dict[str, Any]) -> None:
        self._engine_args = engine_args
        self._engine: Any = None

    def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._engine_args))

    @property
    def hidden_size(self) -> int:
        return int(self._engine.model_config.get_hidden_size())

    @property
    def dtype(self) -> torch.dtype:
        return self._engine.model_config.dtype

    @property
    def max_model_len(self) -> int:
        return int(self._engine.model_config.max_model_len)

    @property
    def embeds_enabled(self) -> bool:
        return bool(getattr(self._engine.model_config, "enable_prompt_embeds", False))

    @property
    def is_healthy(self) -> bool:
        return self._engine is not None and not self._engine.errored

    def generate(
        self, prompt: dict[str, Any], sampling: dict[str, Any], request_id: str, stream: bool
    ) -> AsyncIterator[Any]:
        """Outputs carry deltas when streaming, one final output otherwise.
        Cancelling the consuming task aborts the request inside vLLM."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
        params = SamplingParams(**sampling, output_kind=kind)
        return self._engine.generate(prompt, params, request_id)

    def unfinished_requests(self) -> int:
        return int(self._engine.output_processor.get_num_unfinished_requests())

    def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


def is_client_error(exc: BaseException) -> bool:
    """vLLM's own input validation failures (e.g. a text prompt longer than
    the context): the request was bad, the engine is fine."""
    from vllm.exceptions import VLLMClientError

    return isinstance(exc, (VLLMClientError, ValueError))


def is_engine_dead(exc: BaseException) -> bool:
    from vllm.v1.engine.exceptions import EngineDeadError

    return isinstance(exc, EngineDeadError)
