"""gunicorn settings for tokenstream's app (``-c python:tokenstream.server.gunicorn_conf``).

What many aiohttp workers under gunicorn need for ``/metrics`` to add them all up
(``tokenstream.server.metrics``): a ``PROMETHEUS_MULTIPROC_DIR`` set before any worker
starts (a fresh temporary one unless it is set already, removed when gunicorn exits), and
each worker that ends marked dead in it. gunicorn's other settings come from its command line.

prometheus_client is imported only inside the hooks: it chooses its multiprocess mode when
first imported, and the workers forked from this process would inherit that choice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as tokenstream.server.metrics, not imported (see above)

worker_class = "aiohttp.GunicornWebWorker"

_made_here = not os.environ.get(_ENV)
if _made_here:
    os.environ[_ENV] = tempfile.mkdtemp(prefix="tokenstream-metrics-")


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _made_here:
        shutil.rmtree(os.environ[_ENV], ignore_errors=True)
