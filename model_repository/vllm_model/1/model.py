"""Triton python-backend model serving vLLM from a text prompt or prompt
embeddings, with decoupled (streaming) responses.

Lifecycle only: request handling lives in the `embeds_backend` package beside
this file. The engine runs on an asyncio loop in a background thread;
execute() hands requests to it and returns at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import locale
import os
import sys
import threading
import time
from pathlib import Path

# Triton's stub runs Python isolated under the C locale: text files would open
# as ASCII and importing torch/vLLM fails. Switch to UTF-8 before they load,
# and pass it on to the engine's child processes.
os.environ["LC_ALL"] = os.environ["LANG"] = "C.UTF-8"
os.environ["PYTHONUTF8"] = "1"
locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils

from embeds_backend import triton_config, vllm_version
from embeds_backend.drain import DrainWatch
from embeds_backend.engine import EngineBridge
from embeds_backend.handler import RequestHandler
from embeds_backend.metrics import ModelMetrics
from embeds_backend.settings import load_backend_settings, load_model_file
from embeds_backend.supervisor import EngineSupervisor


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return triton_config.complete(auto_complete_model_config)

    def initialize(self, args: dict) -> None:
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException("this model must use the decoupled transaction policy")
        # An unsupported vLLM fails the load here, naming the range, rather
        # than later with an AttributeError deep in a request.
        vllm_version.check_supported(vllm_version.installed_version())
        model_dir = Path(args["model_repository"])
        model_file = load_model_file(
            model_dir / args["model_version"] / "model.json", repository_root=model_dir.parent.parent
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine-loop", daemon=True)
        self._thread.start()
        self._engine = EngineBridge(
            model_file.engine_args, model_file.chat_template, model_file.lora_adapters
        )
        self._run(self._start_engine())
        self._metrics = ModelMetrics(args["model_name"])
        self._metrics.engine_state(ready=True)
        name = self._name = args["model_name"]
        self._supervisor = EngineSupervisor(
            self._engine,
            self._loop,
            on_state=self._metrics.engine_state,
            log=lambda message: pb_utils.Logger.log_warn(f"{name}: {message}"),
        )
        self._loop.call_soon_threadsafe(self._supervisor.start)
        settings = load_backend_settings(model_config)
        drain = DrainWatch.from_environment(settings.drain_timeout_s)
        drain.clear_stale()
        self._handler = RequestHandler(
            self._engine, self._supervisor, settings, self._metrics, self._loop, drain
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']}: vLLM engine ready (hidden size {self._engine.hidden_size}, "
            f"dtype {self._engine.dtype}, context {self._engine.max_model_len}, "
            f"prompt embeds {'on' if self._engine.embeds_enabled else 'off'}, "
            f"chat template {'yes' if self._engine.templating.template else 'none'}, "
            f"LoRA adapters: {', '.join(self._engine.adapters) or 'none'})"
        )

    async def _start_engine(self) -> None:
        self._engine.start()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def execute(self, requests):
        for request in requests:
            self._handler.submit(request)
        return None

    def finalize(self) -> None:
        """Unload: end held requests, stop the engine and its processes, then
        release everything that touches Triton's shared memory while it still
        exists. Each step runs even if an earlier one failed: a metric left to
        interpreter exit crashes the stub in its destructor."""
        began = time.monotonic()
        for step in (self._supervisor.stop, self._handler.shutdown, self._stop_engine):
            self._try(lambda step=step: self._run(step()))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._try(self._loop.close)
        self._try(self._metrics.close)
        self._handler = self._supervisor = self._metrics = self._engine = None
        gc.collect()
        pb_utils.Logger.log_info(f"{self._name}: unloaded in {time.monotonic() - began:.1f} s")

    def _try(self, step) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - unloading must go on
            pb_utils.Logger.log_warn(f"{self._name}: unloading: {type(exc).__name__}: {exc}")

    async def _stop_engine(self) -> None:
        self._engine.shutdown()
