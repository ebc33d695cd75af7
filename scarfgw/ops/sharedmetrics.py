"""Where the processes of one gateway share their metrics (prometheus-client's multiprocess
mode). Importing this module does not import prometheus-client, which reads the folder from
the environment when it is first imported."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client keeps the metrics of every process when there are workers."""


def share_metrics() -> None:
    """Give this process and the workers it starts a fresh shared metrics folder (removed
    at exit), unless the environment names one already."""
    if METRICS_DIR_VARIABLE not in os.environ:
        folder = tempfile.mkdtemp(prefix="scarfgw-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = folder
        atexit.register(shutil.rmtree, folder, True)
