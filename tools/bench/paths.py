"""The measured paths and the ratios the report derives from them."""

from __future__ import annotations

from dataclasses import dataclass

ENGINE = "engine"
TRITON = "triton"
VLLM_SERVE = "vllm-serve"
SYSTEMS = (ENGINE, TRITON, VLLM_SERVE)  # run in this order, one at a time


@dataclass(frozen=True)
class PathSpec:
    name: str
    system: str  # which process serves it: ENGINE, TRITON or VLLM_SERVE
    # inprocess, grpc, http, openai (vllm serve's API) or openai-server (this
    # project's OpenAI server, beside tritonserver)
    transport: str
    prompt: str  # embeds, embeds_fp16, embeds_bf16, embeds_base64, text or tokens
    label: str


PATHS: dict[str, PathSpec] = {
    spec.name: spec
    for spec in (
        PathSpec("engine-embeds", ENGINE, "inprocess", "embeds", "AsyncLLM in-process, prompt_embeds tensor"),
        PathSpec("engine-tokens", ENGINE, "inprocess", "tokens", "AsyncLLM in-process, prompt_token_ids"),
        PathSpec("engine-text", ENGINE, "inprocess", "text", "AsyncLLM in-process, text prompt"),
        PathSpec("triton-grpc-embeds", TRITON, "grpc", "embeds", "Triton gRPC, prompt_embeds FP32 tensor"),
        PathSpec(
            "triton-grpc-embeds-fp16", TRITON, "grpc", "embeds_fp16", "Triton gRPC, prompt_embeds_fp16 tensor"
        ),
        PathSpec(
            "triton-grpc-embeds-bf16", TRITON, "grpc", "embeds_bf16", "Triton gRPC, prompt_embeds_bf16 tensor"
        ),
        PathSpec("triton-grpc-base64", TRITON, "grpc", "embeds_base64", "Triton gRPC, prompt_embeds_base64"),
        PathSpec(
            "triton-http-base64",
            TRITON,
            "http",
            "embeds_base64",
            "Triton HTTP generate_stream, prompt_embeds_base64",
        ),
        PathSpec("triton-grpc-text", TRITON, "grpc", "text", "Triton gRPC, text_input"),
        PathSpec(
            "openai-server-embeds",
            TRITON,
            "openai-server",
            "embeds_base64",
            "this project's OpenAI server /v1/completions, base64 prompt_embeds",
        ),
        PathSpec(
            "openai-server-text",
            TRITON,
            "openai-server",
            "text",
            "this project's OpenAI server /v1/completions, text prompt",
        ),
        PathSpec(
            "vllm-serve-embeds",
            VLLM_SERVE,
            "openai",
            "embeds_base64",
            "vllm serve /v1/completions, base64 prompt_embeds",
        ),
        PathSpec("vllm-serve-text", VLLM_SERVE, "openai", "text", "vllm serve /v1/completions, text prompt"),
    )
}

# Half-precision raw inputs only make sense when the engine runs in that precision.
_HALF_PATHS = {
    "float16": ("triton-grpc-embeds-fp16",),
    "bfloat16": ("triton-grpc-embeds-fp16", "triton-grpc-embeds-bf16"),
}


def default_paths(dtype: str) -> list[str]:
    half = set(_HALF_PATHS.get(dtype, ()))
    return [
        name
        for name in PATHS
        if name not in {"triton-grpc-embeds-fp16", "triton-grpc-embeds-bf16"} or name in half
    ]


@dataclass(frozen=True)
class RatioSpec:
    name: str
    numerator: str
    denominator: str
    target: float | None  # from the project's performance targets, where one exists
    meaning: str


RATIOS = (
    RatioSpec(
        "(2)/(1) embeds",
        "triton-grpc-embeds",
        "engine-embeds",
        0.90,
        "Triton binary embeds vs the engine's own embeds limit",
    ),
    RatioSpec(
        "(2 fp16)/(1) embeds",
        "triton-grpc-embeds-fp16",
        "engine-embeds",
        0.90,
        "Triton fp16 embeds vs the engine's embeds limit",
    ),
    RatioSpec(
        "(2 bf16)/(1) embeds",
        "triton-grpc-embeds-bf16",
        "engine-embeds",
        0.90,
        "Triton bf16 embeds vs the engine's embeds limit",
    ),
    RatioSpec(
        "(2)/(4) embeds",
        "triton-grpc-embeds",
        "vllm-serve-embeds",
        None,
        "Triton binary embeds vs vllm serve base64 embeds",
    ),
    RatioSpec(
        "(3 gRPC)/(4) base64",
        "triton-grpc-base64",
        "vllm-serve-embeds",
        2.0,
        "same base64 payload: Triton gRPC vs vllm serve",
    ),
    RatioSpec(
        "(3 HTTP)/(4) base64",
        "triton-http-base64",
        "vllm-serve-embeds",
        2.0,
        "same base64 payload: Triton HTTP vs vllm serve",
    ),
    RatioSpec(
        "text (2)/(4)", "triton-grpc-text", "vllm-serve-text", 0.95, "text prompts: Triton gRPC vs vllm serve"
    ),
    RatioSpec(
        "(5)/(4) embeds",
        "openai-server-embeds",
        "vllm-serve-embeds",
        1.0,
        "same OpenAI call and payload: this project's OpenAI server vs vllm serve",
    ),
    RatioSpec(
        "text (5)/(4)",
        "openai-server-text",
        "vllm-serve-text",
        0.95,
        "text prompts over the OpenAI API: this project's server vs vllm serve",
    ),
    RatioSpec(
        "engine embeds/tokens", "engine-embeds", "engine-tokens", None, "what embeds cost the engine itself"
    ),
)
