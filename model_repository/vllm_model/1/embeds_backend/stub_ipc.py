"""One lock for every call into Triton's python-backend stub made from this
model's own threads (responses, cancellation checks, metrics, logs).

The stub's messages to tritonserver are not safe to send from several
threads at once. Measured: with metrics published from one thread while
another streamed responses (8 concurrent 400-token streams), a response
factory was never released; tritonserver then kept the model loaded on
SIGTERM until its exit timeout expired and it aborted. With every such call
under this lock, the same load unloads in seconds. The stub's own thread
(execute) does not take it; it calls into the stub only between our calls'
turns of its message loop.
"""

from __future__ import annotations

import threading

STUB_IPC = threading.RLock()
