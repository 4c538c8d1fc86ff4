# Test-only stand-in for the `tensorrt` frontend package (pip install tensorrt-cu12), which on a
# GPU machine is exactly these two lines (NVIDIA/TensorRT python/packaging/frontend_sdist/tensorrt/__init__.py).
# install.sh copies it beside the bindings wheel so that `import tensorrt as trt` resolves as it would there.
from tensorrt_bindings import *  # noqa: F401,F403
from tensorrt_bindings import __version__  # noqa: F401
