"""The life of one request on the model's event loop: parse, validate (in a
worker thread for embeddings), generate, stream responses, and always finish
with exactly one final flag."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import triton_io
from .chat_messages import ChatLimits, parse_conversation
from .chat_prompt import build_chat_prompt
from .contract import GENERATION_FAILED, Rule, Unavailable
from .drain import DrainOrder, DrainWatch
from .embeds import EmbedsLimits
from .engine import EngineBridge, is_client_error, is_engine_dead
from .errors import EngineUnavailable, RequestRejected
from .metrics import ModelMetrics
from .prompts import build_embeds_prompt, build_text_prompt
from .request_parsing import ParsedRequest, PromptKind, check_adapter, parse_request, reject_prompt_logprobs
from .settings import BackendSettings
from .supervisor import EngineSupervisor


def step_outputs(completion: Any) -> triton_io.StepOutputs:
    """What one engine output added beyond text (its token ids, logprobs and
    cumulative logprob are this step's when streaming, the whole sequence's
    otherwise), in plain Python for the response thread to serialize."""
    logprobs = None if completion.logprobs is None else _logprobs_json(completion.logprobs)
    return triton_io.StepOutputs(len(completion.token_ids), logprobs, completion.cumulative_logprob)


def _logprobs_json(positions: Any) -> list[dict[int, dict[str, Any]] | None]:
    """vLLM's per-position {token_id: Logprob}, as plain JSON-ready values
    (a prompt's first position has none: None)."""
    return [
        None
        if position is None
        else {
            token_id: {"logprob": entry.logprob, "rank": entry.rank, "decoded_token": entry.decoded_token}
            for token_id, entry in position.items()
        }
        for position in positions
    ]


# What one response carries: text, finish reason, step outputs, choice, final.
_Response = tuple[str, str | None, "triton_io.StepOutputs | None", triton_io.Choice, bool]


class _RequestStream:
    """Turns one request's engine outputs into responses: per choice, the
    echoed prompt before its first text; the prompt's logprobs on the
    request's first response; the final flag on the output that ends it. With
    n > 1 an output holds the choices that advanced (every choice when not
    streaming), each told apart by its index."""

    def __init__(self, parsed: ParsedRequest, echo_prompt: bool) -> None:
        self._echo = parsed.text if echo_prompt else None
        self._multiple = parsed.n > 1
        self._wants_steps = parsed.extra_outputs.any  # per-token work only when asked for
        self._wants_prompt_logprobs = parsed.sampling.get("prompt_logprobs") is not None
        self._started: set[int] = set()
        self.generated = self.prompt_tokens = 0

    def responses(self, output: Any) -> list[_Response]:
        self.prompt_tokens = len(output.prompt_token_ids or ())
        self.generated += sum(len(c.token_ids) for c in output.outputs)
        sendable = [c for c in output.outputs if c.text or c.token_ids or c.finish_reason]
        if output.finished and not sendable and output.outputs:
            sendable = [output.outputs[-1]]  # the final flag needs a response to ride on
        result = []
        for position, completion in enumerate(sendable):
            final = output.finished and position == len(sendable) - 1
            result.append(self._response(output, completion, final))
        return result

    def _response(self, output: Any, completion: Any, final: bool) -> _Response:
        first = completion.index not in self._started
        self._started.add(completion.index)
        prefix = self._echo if first and self._echo else ""
        prompt_logprobs = None
        if self._wants_prompt_logprobs and len(self._started) == 1 and first:
            prompt_logprobs = json.dumps(_logprobs_json(output.prompt_logprobs or []))
        choice = triton_io.SINGLE_CHOICE  # the common case allocates nothing per token
        if self._multiple or prompt_logprobs is not None:
            choice = triton_io.Choice(completion.index, self._multiple, prompt_logprobs)
        step = step_outputs(completion) if self._wants_steps else None
        reason = completion.finish_reason if (final or self._multiple) else None
        return prefix + completion.text, reason, step, choice, final


class RequestHandler:
    def __init__(
        self,
        engine: EngineBridge,
        supervisor: EngineSupervisor,
        settings: BackendSettings,
        metrics: ModelMetrics,
        loop: asyncio.AbstractEventLoop,
        drain: DrainWatch | None = None,
    ) -> None:
        self._engine = engine
        self._supervisor = supervisor
        self._settings = settings
        self._metrics = metrics
        self._loop = loop
        self._limits = EmbedsLimits(
            hidden_size=engine.hidden_size,
            dtype=engine.dtype,
            max_bytes=settings.max_embeds_bytes,
        )
        self._chat_limits = ChatLimits(
            max_messages_bytes=settings.max_messages_bytes,
            max_messages=settings.max_chat_messages,
            max_parts=settings.max_chat_parts,
        )
        self._decoders = ThreadPoolExecutor(settings.decode_workers, "embeds-decode")
        self._responses = triton_io.ResponseSender(before_final=metrics.publish)
        self._inflight: dict[asyncio.Task, triton_io.ClientStream] = {}
        self._drain = drain or DrainWatch(None, 0.0)
        self._draining = False
        self._collected = False
        # Why the server ended the requests it cancelled (None: the clients left).
        self._stop_reason: str | None = None
        self._stopped = threading.Event()
        self._watcher = threading.Thread(target=self._watch_cancellations, name="cancel-watcher", daemon=True)
        self._watcher.start()

    # -- called from Triton's execute() thread --------------------------------
    def submit(self, request: Any) -> None:
        self._loop.call_soon_threadsafe(self._start, request)

    # -- on the event loop -----------------------------------------------------
    def _start(self, request: Any) -> None:
        limit = self._settings.max_concurrent_requests
        if self._draining:
            message = "the server is shutting down and takes no new requests; retry on another replica"
            self._refuse(request, Unavailable.DRAINING, message)
            return
        if limit and len(self._inflight) >= limit:
            message = f"model is at its limit of {limit} concurrent requests; retry later"
            self._refuse(request, Unavailable.CONCURRENCY_LIMIT, message)
            return
        stream = triton_io.ClientStream(request)
        task = self._loop.create_task(self._handle(request, stream))
        self._inflight[task] = stream
        task.add_done_callback(self._forget)

    def _refuse(self, request: Any, code: str, message: str) -> None:
        self._metrics.rejection(code)
        self._finish(triton_io.ClientStream(request), triton_io.unavailable(code, message), "unavailable")

    def _forget(self, task: asyncio.Task) -> None:
        self._inflight.pop(task, None)

    def _begin_drain(self, order: DrainOrder) -> None:
        """Refuse new requests from now on; end the held ones at the deadline."""
        self._draining = True
        self._metrics.draining()
        triton_io.warn(
            f"draining: {len(self._inflight)} requests in flight, {order.remaining():.1f} s to finish"
        )
        self._loop.call_later(order.remaining(), self._stop_all, "the drain time ran out")

    def _stop_all(self, reason: str) -> None:
        """End every held request with an UNAVAILABLE error naming `reason`."""
        if self._inflight:
            triton_io.warn(f"ending {len(self._inflight)} requests: {reason}")
        self._stop_reason = reason
        for task in list(self._inflight):
            task.cancel()

    # -- on the cancel-watcher thread -------------------------------------------
    def _watch_cancellations(self) -> None:
        """Client cancellation is polled (a non-streaming request produces no
        output to fail on until it ends); cancelling the task makes vLLM abort
        the request. This runs in its own thread because is_cancelled() and
        metric updates are blocking IPC round trips to Triton: on the event
        loop they would stall every stream. The engine gauge is refreshed and
        recorded metrics are published here too, so both stay live while
        requests run."""
        while not self._stopped.wait(self._settings.cancel_poll_interval_s):
            try:
                self._cancel_abandoned()
                self._watch_drain()
                self._metrics.unfinished(self._engine.unfinished_requests())
                self._metrics.load(len(self._inflight), self._engine.load.latest)
                self._metrics.publish()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one failure
                triton_io.warn(f"cancellation check failed: {type(exc).__name__}: {exc}")

    def _watch_drain(self) -> None:
        if not self._draining and (order := self._drain.poll()) is not None:
            self._draining = True  # refuse at once, before the loop runs _begin_drain
            self._loop.call_soon_threadsafe(self._begin_drain, order)
        elif self._draining and not self._inflight and not self._collected:
            # Drained: collect reference cycles now, so no request object a
            # cycle still holds keeps the model loaded when Triton unloads it.
            self._collected = True
            gc.collect()

    def _cancel_abandoned(self) -> None:
        for task, stream in list(self._inflight.items()):
            if not task.done() and stream.is_cancelled():
                self._loop.call_soon_threadsafe(task.cancel)

    async def _handle(self, request: Any, sender: triton_io.ClientStream) -> None:
        arrival = time.monotonic()
        try:
            # Only the inputs and the stream are kept: a request object the
            # stub still references keeps the model from unloading (see
            # ClientStream), and this frame can outlive the request in an
            # exception's traceback.
            inputs, request = triton_io.read_inputs(request), None
            parsed = parse_request(inputs, self._engine.embeds_enabled)
            self._metrics.request(parsed.kind.value)
            if parsed.kind is PromptKind.MODEL_INFO:
                self._answer_model_info(sender)
                return
            for feature in parsed.features:
                self._metrics.feature(feature)
            check_adapter(parsed.options, self._engine.adapters)
            prompt = await self._build_prompt(parsed)
            if not self._engine.is_healthy:
                raise self._supervisor.unavailable()
            engine_input = await self._engine.render(prompt, parsed.options)
            await self._generate(parsed, engine_input, sender, arrival)
        except RequestRejected as exc:
            self._metrics.rejection(exc.rule)
            self._finish(sender, triton_io.rejected(exc.rule, exc.message), "rejected")
        except asyncio.CancelledError:
            if self._stop_reason is None:
                self._finish(sender, None, "cancelled")  # the client is gone: only the final flag
            else:
                message = f"the server is shutting down: {self._stop_reason} before this request finished"
                self._finish(sender, triton_io.unavailable(Unavailable.SHUTDOWN, message), "unavailable")
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client
            self._fail(sender, exc)

    def _answer_model_info(self, sender: triton_io.ClientStream) -> None:
        self._metrics.finished("completed")
        info = self._engine.model_info()
        self._responses.send_one(sender, lambda: triton_io.make_model_info_response(info))

    async def _build_prompt(self, parsed: ParsedRequest) -> dict[str, Any]:
        if parsed.kind is PromptKind.TEXT:
            return build_text_prompt(parsed)
        if parsed.kind is PromptKind.CHAT:
            return await self._loop.run_in_executor(self._decoders, self._build_chat_prompt, parsed)
        return await self._loop.run_in_executor(
            self._decoders, build_embeds_prompt, parsed, self._limits, self._engine.max_model_len
        )

    def _build_chat_prompt(self, parsed: ParsedRequest) -> dict[str, Any]:
        """In a worker thread: parsing the messages JSON, decoding its parts
        and rendering the template are all work."""
        conversation = parse_conversation(parsed.messages or b"", parsed.chat_parameters, self._chat_limits)
        if conversation.embeds_parts:
            reject_prompt_logprobs(parsed.sampling)
        return build_chat_prompt(
            conversation,
            parsed.embeds_tensor,
            self._engine.templating,
            self._limits,
            parsed.max_tokens,
            self._engine.max_model_len,
            self._settings.max_mixed_embeds_bytes,
            parsed.options.truncate_prompt_tokens,
        )

    async def _generate(self, parsed: ParsedRequest, engine_input: Any, sender: Any, arrival: float) -> None:
        stream = _RequestStream(parsed, self._echoes_prompt(parsed))
        finished = False
        async for output in self._engine.generate(
            engine_input, parsed.sampling, uuid.uuid4().hex, parsed.stream, parsed.options.lora_name
        ):
            if parsed.stream and stream.generated == 0 and any(c.token_ids for c in output.outputs):
                self._metrics.time_to_first_token(time.monotonic() - arrival)
            finished = output.finished
            responses = stream.responses(output)
            if finished:  # before the final response, which publishes them
                self._record_completion(stream.prompt_tokens, stream.generated, output)
            for text, reason, step, choice, final in responses:
                usage = triton_io.Usage(stream.prompt_tokens, stream.generated)
                self._responses.stream(sender, text, reason, usage, final, parsed.extra_outputs, step, choice)
        if not finished:  # never leave a stream without its final flag
            self._record_completion(stream.prompt_tokens, stream.generated, None)
            self._responses.finish(sender)

    def _record_completion(self, prompt_tokens: int, generated: int, output: Any | None) -> None:
        self._metrics.tokens(prompt_tokens, generated)
        if output is not None and output.num_cached_tokens:
            self._metrics.cached_prompt_tokens(int(output.num_cached_tokens))
        self._metrics.finished("completed")

    @staticmethod
    def _echoes_prompt(parsed: ParsedRequest) -> bool:
        """As Triton's vLLM backend: non-streaming text output starts with the
        prompt unless exclude_input_in_output is set."""
        return parsed.kind is PromptKind.TEXT and not parsed.stream and not parsed.exclude_input_in_output

    def _fail(self, sender: Any, exc: BaseException) -> None:
        if isinstance(exc, EngineUnavailable) or is_engine_dead(exc):
            self._supervisor.report_failure()
            code = exc.code if isinstance(exc, EngineUnavailable) else Unavailable.ENGINE_DOWN
            message = f"the vLLM engine is unavailable: {exc or 'engine core died'}"
            self._finish(sender, triton_io.unavailable(code, message), "unavailable")
        elif is_client_error(exc):
            self._metrics.rejection(Rule.ENGINE_VALIDATION)
            self._finish(sender, triton_io.rejected(Rule.ENGINE_VALIDATION, str(exc)), "rejected")
        else:
            message = f"generation failed: {type(exc).__name__}: {exc}"
            self._finish(sender, triton_io.internal_error(GENERATION_FAILED, message), "failed")

    def _finish(self, sender: triton_io.ClientStream, error: triton_io.Reply | None, outcome: str) -> None:
        self._metrics.finished(outcome)  # first: the final response publishes it
        self._responses.finish(sender, error)

    async def shutdown(self) -> None:
        self._stop_all("the model is being unloaded")
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._stopped.set()
        self._watcher.join(timeout=5)
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self._responses.close()
