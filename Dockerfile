# GPU image: NVIDIA's Triton container with vLLM (its python backend is built
# for numpy 2, and vLLM is preinstalled), plus this project's model and client.
#   docker build -t triton-prompt-embeds .
#   docker run --gpus all --shm-size=2g -p 8000:8000 -p 8001:8001 -p 8002:8002 \
#     -v /path/to/hf-model:/models/model triton-prompt-embeds
# model.json points at /models/model; edit it (or mount your own) for another model.
ARG TRITON_VLLM_IMAGE=nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3
FROM ${TRITON_VLLM_IMAGE}

WORKDIR /opt/triton-prompt-embeds
COPY pyproject.toml README.md ./
COPY client ./client
COPY model_repository ./model_repository
# The client package (and the server-side package, also importable from the
# model directory itself); vLLM and torch come from the base image.
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir "tritonclient[grpc,http]" "openai>=1.40" \
 && printf '{"model": "/models/model", "enable_prompt_embeds": true, "dtype": "auto", "gpu_memory_utilization": 0.9}\n' \
      > model_repository/vllm_model/1/model.json

EXPOSE 8000 8001 8002
# Ping strikes off: see SERVER_DEFAULT_ARGS in tools/server/launcher.py.
CMD ["tritonserver", "--model-repository=/opt/triton-prompt-embeds/model_repository", \
     "--grpc-http2-max-ping-strikes=0"]
