"""A narrow bridge to vLLM's AsyncLLM: the only module that imports vLLM's
engine API, so a vLLM upgrade touches one file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch

from .chat_prompt import ChatTemplating, content_as_parts
from .contract import EMBEDS_PLACEHOLDER


@dataclass(frozen=True)
class ModelFacts:
    """What request validation needs to know about the served model. Read
    once, so it stays available while a dead engine is being replaced."""

    hidden_size: int
    dtype: torch.dtype
    max_model_len: int
    embeds_enabled: bool
    templating: ChatTemplating


class EngineBridge:
    def __init__(self, engine_args: dict[str, Any], chat_template: str | None = None) -> None:
        self._engine_args = engine_args
        self._chat_template = chat_template
        self._engine: Any = None
        self._facts: ModelFacts | None = None

    def start(self) -> None:
        """Build the engine (slow: loads weights). Safe to call off the event
        loop: AsyncLLM starts its output handler on the first generate()."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self._engine_args))
        config = engine.model_config
        # ModelConfig resolves "auto"/"half"/... to a torch.dtype on construction.
        assert isinstance(config.dtype, torch.dtype), config.dtype
        embeds_enabled = bool(getattr(config, "enable_prompt_embeds", False))
        self._facts = ModelFacts(
            hidden_size=int(config.get_hidden_size()),
            dtype=config.dtype,
            max_model_len=int(config.max_model_len),
            embeds_enabled=embeds_enabled,
            templating=self._templating(engine, embeds_enabled),
        )
        self._engine = engine

    def _templating(self, engine: Any, embeds_enabled: bool) -> ChatTemplating:
        """The renderer's tokenizer: with prompt embeddings on, vLLM registers
        its placeholder there as a special token, so each embeddings part
        tokenizes to exactly one id wherever the template puts it."""
        tokenizer = engine.renderer.get_tokenizer()
        template = self._chat_template or getattr(tokenizer, "chat_template", None)
        placeholder_id = None
        if embeds_enabled:
            ids = tokenizer.encode(EMBEDS_PLACEHOLDER, add_special_tokens=False)
            placeholder_id = ids[0] if len(ids) == 1 else None
        template = template if isinstance(template, str) else None
        return ChatTemplating(tokenizer, template, placeholder_id, content_as_parts(tokenizer, template))

    @property
    def facts(self) -> ModelFacts:
        if self._facts is None:
            raise RuntimeError("the engine has not been started")
        return self._facts

    @property
    def hidden_size(self) -> int:
        return self.facts.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return self.facts.dtype

    @property
    def max_model_len(self) -> int:
        return self.facts.max_model_len

    @property
    def embeds_enabled(self) -> bool:
        return self.facts.embeds_enabled

    @property
    def templating(self) -> ChatTemplating:
        return self.facts.templating

    @property
    def is_healthy(self) -> bool:
        engine = self._engine
        return engine is not None and not engine.errored

    async def render(self, prompt: dict[str, Any]) -> Any:
        """A text, token-id or embeddings prompt as the engine's input, through
        vLLM's renderer (passing raw prompt dicts to generate() is deprecated).
        Text is tokenized here as for a completion (special tokens added)."""
        (engine_input,) = await self._engine.renderer.render_cmpl_async([prompt])
        return engine_input

    def generate(
        self, engine_input: Any, sampling: dict[str, Any], request_id: str, stream: bool
    ) -> AsyncIterator[Any]:
        """Outputs carry deltas when streaming, one final output otherwise.
        Cancelling the consuming task aborts the request inside vLLM."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
        params = SamplingParams(**sampling, output_kind=kind)
        return self._engine.generate(engine_input, params, request_id)

    def unfinished_requests(self) -> int:
        engine = self._engine
        if engine is None:
            return 0
        return int(engine.output_processor.get_num_unfinished_requests())

    def shutdown(self) -> None:
        """Stop the engine and its processes. Must run on the event loop that
        ran generate(): it cancels the engine's output-handler task there."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()


def is_client_error(exc: BaseException) -> bool:
    """vLLM's own input validation failures (e.g. a text prompt longer than
    the context): the request was bad, the engine is fine."""
    return isinstance(exc, _client_error_types())


def _client_error_types() -> tuple[type[BaseException], ...]:
    # VLLMClientError arrived after 0.25; older releases raise ValueError
    # subclasses (VLLMValidationError) for bad requests.
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (VLLMClientError, ValueError)


def is_engine_dead(exc: BaseException) -> bool:
    from vllm.v1.engine.exceptions import EngineDeadError

    return isinstance(exc, EngineDeadError)
