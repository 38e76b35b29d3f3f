# GPU image: NVIDIA's Triton container, a supported vLLM, this project's model,
# client, OpenAI-compatible server and replica supervisor.
#
#   docker build -t triton-prompt-embeds .
#
# Triton replica (the default command): tritonserver under the replica
# supervisor, health endpoints (/ready, /live) on 8003, a drain on SIGTERM.
#   docker run --gpus all --init --shm-size=2g \
#     -p 8000:8000 -p 8001:8001 -p 8002:8002 -p 8003:8003 \
#     -v /path/to/hf-model:/models/model triton-prompt-embeds
#
# OpenAI-compatible server from the same image, in front of Triton replicas:
#   docker run --init -p 9000:9000 triton-prompt-embeds \
#     triton-embeds-openai --host 0.0.0.0 --port 9000 --triton-url <host>:8001
#
# model.json points at /models/model; edit it (or mount your own over
# /opt/triton-prompt-embeds/model_repository/vllm_model/1/model.json).
#
# Why not the Triton vLLM container (<yy.mm>-vllm-python-py3): the vLLM it
# bundles is older than the range this model supports (>=0.29.0,<0.33, see
# embeds_backend/vllm_version.py). Triton's compatibility matrix lists vLLM
# 0.10.2 in 25.10, 0.22.1 in 26.06 and 0.24.0 in 26.07, the newest it lists;
# since 26.03 that container takes its vLLM from NVIDIA's vLLM container of
# the same month. So the base is Triton's general container (python backend,
# no vLLM, no torch) and vLLM comes from PyPI, pinned below.
#
# Build arguments:
#   TRITON_IMAGE   the Triton container to build on
#   VLLM_VERSION   the vLLM release installed from PyPI; empty keeps the base
#                  image's own vLLM, e.g. with
#                  TRITON_IMAGE=nvcr.io/nvidia/tritonserver:<yy.mm>-vllm-python-py3
# Either way the build fails unless the vLLM it ends with is supported.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:26.10-py3
FROM ${TRITON_IMAGE}

ARG VLLM_VERSION=0.32.0
# Ubuntu's Python refuses system-wide pip installs otherwise (Triton's own
# images set this too).
ENV PIP_BREAK_SYSTEM_PACKAGES=1

# vLLM first: the largest layer, and the one that changes least often.
RUN if [ -n "${VLLM_VERSION}" ]; then \
      pip install --no-cache-dir "vllm==${VLLM_VERSION}"; \
    fi

WORKDIR /opt/triton-prompt-embeds
COPY pyproject.toml README.md ./
COPY client ./client
COPY openai_server ./openai_server
COPY replica ./replica
COPY model_repository ./model_repository
# The client, the OpenAI server (with its extra's dependencies), the replica
# supervisor, and the server-side package (also importable from the model
# directory itself); vLLM and torch are already installed. The project is a
# local path: its dependencies' ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[openai-server]" \
 && python3 -m embeds_backend.vllm_version \
 && python3 -m triton_embeds_replica --help > /dev/null \
 && triton-embeds-openai --help > /dev/null \
 && printf '{"model": "/models/model", "enable_prompt_embeds": true, "dtype": "auto", "gpu_memory_utilization": 0.9}\n' \
      > model_repository/vllm_model/1/model.json

# 8000-8002: tritonserver's HTTP, gRPC and metrics; 8003: the replica's
# /ready and /live.
EXPOSE 8000 8001 8002 8003
# The supervisor starts tritonserver with --grpc-http2-max-ping-strikes=0
# (see README, "Security and reliability"); arguments after -- go to it.
CMD ["python3", "-m", "triton_embeds_replica", \
     "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002", \
     "--health-port", "8003", "--drain-timeout", "30", \
     "--", "--model-repository=/opt/triton-prompt-embeds/model_repository"]
