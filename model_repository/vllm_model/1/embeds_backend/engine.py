"""A narrow bridge to vLLM's AsyncLLM: the only module that imports vLLM's
engine API, so a vLLM upgrade touches one file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch

from .chat_prompt import ChatTemplating, content_as_parts
from .contract import EMBEDS_PLACEHOLDER, Unavailable
from .engine_load import LoadProbe
from .errors import EngineUnavailable
from .sampling import MAX_LOGPROBS, MAX_N, NO_REQUEST_OPTIONS, RequestOptions


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
    def __init__(
        self,
        engine_args: dict[str, Any],
        chat_template: str | None = None,
        lora_adapters: dict[str, str] | None = None,
    ) -> None:
        self._engine_args = engine_args
        self._chat_template = chat_template
        # name -> LoRARequest; ids are vLLM's cache keys, fixed for the model's life.
        self._adapters = {
            name: _lora_request(name, i + 1, path)
            for i, (name, path) in enumerate((lora_adapters or {}).items())
        }
        self._engine: Any = None
        self._facts: ModelFacts | None = None
        self.load = LoadProbe()

    def start(self) -> None:
        """Build the engine (slow: loads weights). Safe to call off the event
        loop: AsyncLLM starts its output handler on the first generate()."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        _reuse_cpu_compile_cache()
        self.load.latest = None  # a replaced engine starts empty
        engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**self._engine_args), stat_loggers=[self.load.logger_factory()]
        )
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
    def adapters(self) -> tuple[str, ...]:
        return tuple(self._adapters)

    def model_info(self) -> dict[str, Any]:
        """What a client may ask the model about itself (MODEL_INFO_KEYS)."""
        facts = self.facts
        return {
            "adapters": list(self._adapters),
            "max_model_len": facts.max_model_len,
            "hidden_size": facts.hidden_size,
            "dtype": str(facts.dtype).removeprefix("torch."),
            "prompt_embeds": facts.embeds_enabled,
            "chat_template": facts.templating.template is not None,
            "max_logprobs": MAX_LOGPROBS,
            "max_n": MAX_N,
            # False while a dead engine is being replaced: requests get UNAVAILABLE.
            "engine_ready": self.is_healthy,
        }

    @property
    def is_healthy(self) -> bool:
        engine = self._engine
        return engine is not None and not engine.errored

    async def render(self, prompt: dict[str, Any], options: RequestOptions = NO_REQUEST_OPTIONS) -> Any:
        """A text, token-id or embeddings prompt as the engine's input, through
        vLLM's renderer (passing raw prompt dicts to generate() is deprecated).
        Text is tokenized here as for a completion (special tokens added);
        truncation keeps the last positions, of token ids and rows alike."""
        renderer = self._running().renderer
        tok_params = None
        if options.truncate_prompt_tokens is not None:
            tok_params = renderer.default_cmpl_tok_params.with_kwargs(
                truncate_prompt_tokens=options.truncate_prompt_tokens, truncation_side="left"
            )
        if options.cache_salt is not None:
            prompt = {**prompt, "cache_salt": options.cache_salt}
        (engine_input,) = await renderer.render_cmpl_async([prompt], tok_params)
        return engine_input

    def generate(
        self,
        engine_input: Any,
        sampling: dict[str, Any],
        request_id: str,
        stream: bool,
        lora_name: str | None = None,
    ) -> AsyncIterator[Any]:
        """Outputs carry deltas when streaming, one final output otherwise.
        Cancelling the consuming task aborts the request inside vLLM. The
        adapter must be one of `adapters` (checked with the request)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
        structured = sampling.get("structured_outputs")
        if structured is not None:
            sampling = {**sampling, "structured_outputs": StructuredOutputsParams(**structured)}
        params = SamplingParams(**sampling, output_kind=kind)
        lora = self._adapters[lora_name] if lora_name is not None else None
        return self._running().generate(engine_input, params, request_id, lora_request=lora)

    def _running(self) -> Any:
        """The engine, or UNAVAILABLE when a dead one is being replaced: a
        request that passed the health check can reach here after the
        supervisor dropped the dead engine."""
        engine = self._engine
        if engine is None:
            raise EngineUnavailable(
                Unavailable.ENGINE_RESTARTING, "the vLLM engine failed and is restarting; retry shortly"
            )
        return engine

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
            # AsyncLLM.__del__ shuts down again when the object dies, which for
            # the stub is interpreter exit, after module globals are cleared:
            # a TypeError traceback in the log. Once is enough.
            engine.shutdown = _already_shut_down


def _already_shut_down(*args: Any, **kwargs: Any) -> None:
    pass


def _reuse_cpu_compile_cache() -> None:
    """On the CPU, vLLM (0.32, torch >= 2.10) saves an AOT-compiled model it
    cannot load back: its CPU path compiles with Inductor directly, and the
    loader expects vLLM's own backend ("'function' object has no attribute
    'finalize_loading'"), so every start, engine restart and new replica
    compiles from scratch. With AOT compilation off, Inductor's own cache is
    reused: SmolLM2 on 2 cores went from 100 s to ready on every start to
    112 s cold and 49 s warm. GPUs compile with vLLM's backend, whose AOT
    cache loads, so they keep it. An explicit VLLM_USE_AOT_COMPILE wins."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")


def _lora_request(name: str, lora_id: int, path: str) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)


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
