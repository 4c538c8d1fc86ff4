# twins-trt on NVIDIA's NGC PyTorch container: CUDA, cuDNN, TensorRT and a CUDA build of torch come
# with the image; this adds the package and its GPU extra, and runs as an unprivileged user.
#
#   docker build -t twins-trt .
#   docker run --gpus all --rm twins-trt                  # prints twins-export --help
#   docker run --gpus all --rm -v "$PWD":/work twins-trt twins-export --variant svt_s --fp16
#
# Engines are tied to the TensorRT version that built them: serve them with the Triton container of
# the same release (nvcr.io/nvidia/tritonserver:25.12-py3 for this base).
FROM nvcr.io/nvidia/pytorch:25.12-py3

ARG TWINS_EXTRAS=gpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/twins-trt
COPY pyproject.toml README.md ./
COPY twins_trt ./twins_trt
# The base image's pip constraint (PIP_CONSTRAINT) keeps its CUDA torch in place. DL3013: this installs
# the package from the build context; its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[${TWINS_EXTRAS}]" \
    && twins-export --help > /dev/null

# A fixed numeric id, so files written to a mounted /work have a known owner on the host.
RUN useradd --no-log-init --create-home --uid 10001 --shell /bin/bash twins \
    && mkdir -p /work \
    && chown 10001:10001 /work
USER 10001
WORKDIR /work

CMD ["twins-export", "--help"]
