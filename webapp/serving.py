"""Process settings for serving the app on a small machine (a 2-vCPU Hugging Face Space), kept apart
from the page so each workaround says why it exists and when it can go.

    from webapp import serving
    serving.disable_analytics()   # before importing gradio
    serving.configure()           # threads, malloc arenas, atomic Gradio image-cache writes

- **Threads**: PyTorch sizes its pool from the host's cores, which in a container can be many more than
  the CPUs it may use (a Space's cpu-basic shows the host's count); oversubscribed threads thrash.
  ``usable_cpus`` reads the affinity mask and the cgroup CPU quota; ``DETECTOR_THREADS`` overrides.
- **Analytics**: Gradio reports usage to its servers unless ``GRADIO_ANALYTICS_ENABLED`` is False; the
  app turns it off unless the environment says otherwise.
- **malloc arenas**, **freed memory back to the OS** and **atomic image-cache writes**: see the functions;
  all measured with ``python -m bench.load_test``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from pathlib import Path

from detector.checkpoint import atomic_write

log = logging.getLogger(__name__)
THREADS_ENV = "DETECTOR_THREADS"


def disable_analytics() -> None:
    """No usage reports to Gradio unless the environment asks for them (call before importing gradio)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota (``cpu.max``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def set_threads() -> int:
    """``torch.set_num_threads`` from ``DETECTOR_THREADS`` or the usable CPUs; returns the count."""
    import torch

    raw = os.environ.get(THREADS_ENV, "")
    try:
        n = int(raw) if raw else usable_cpus()
    except ValueError:
        log.warning("%s=%r is not a whole number; using the usable CPUs", THREADS_ENV, raw)
        n = usable_cpus()
    n = max(1, n)
    torch.set_num_threads(n)
    return n


def cap_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX=n would) before Gradio starts its worker threads.

    glibc gives each new thread its own arena, and memory freed in one is not reused by another, so a
    server whose requests hop between many threads grows without leaking. Measured with
    ``python -m bench.load_test``: +220 MB over 1,000 explanations uncapped, +36 MB capped at 2.
    A no-op off glibc, or where the environment already sets MALLOC_ARENA_MAX.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, n))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> bool:
    """Hand the memory a finished request freed back to the OS (glibc's ``malloc_trim(0)``).

    A wild-track explanation allocates a few hundred MB of ViT activations and gradients; two at once
    raise glibc's heap high-water mark, and freed heap pages stay resident, so the process's memory
    grows in steps that never come back although nothing leaks (+221 MB over 1,000 explanations before
    this). ``malloc_trim`` returns the free pages of every arena (``madvise``), costing about a
    millisecond. A no-op off glibc.
    """
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        return bool(_LIBC.malloc_trim(0))
    except (OSError, AttributeError):
        return False


_LIBC = None


def atomic_image_cache_writes() -> bool:
    """Make Gradio write the images it returns atomically, so a concurrent download never sees half a file.

    Gradio 6 saves each returned image under a folder named by the hash of its bytes with
    ``Path.write_bytes``, which truncates the file and then fills it. Two requests that return the same
    image (two people clicking the same example) rewrite the same path, and a download that lands in
    between gets a short body: ``python -m bench.load_test`` saw "peer closed connection without
    sending complete message body (received 0 bytes, expected 18315)" on one of 1,250 requests, and
    rewriting a cached file while reading it tore 1.4% of the reads. Here the bytes go to a temporary
    file in the same folder and are renamed into place (as Gradio already does in
    ``save_file_to_cache``); a complete copy already there is reused. Returns False, changing
    nothing, if this Gradio no longer has the function (the test for it then fails).

    Upstream to watch: ``gradio/processing_utils.py::save_pil_to_cache`` (Gradio 6.31). No upstream
    issue for it was found when this was written; drop this patch once that function writes through a
    temporary file as ``save_file_to_cache`` does.
    """
    from gradio import processing_utils as pu

    if not all(hasattr(pu, f) for f in ("save_pil_to_cache", "encode_pil_to_bytes", "hash_bytes")):
        return False

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = pu.encode_pil_to_bytes(img, format)
        path = (Path(cache_dir) / pu.hash_bytes(data) / f"{name}.{format}").resolve()
        try:
            if path.stat().st_size == len(data):  # the folder is named by the bytes' hash: same bytes
                os.utime(path)  # delete_cache ages files by time: a reused copy counts as new
                return str(path)
        except FileNotFoundError:
            pass
        atomic_write(path, data)
        return str(path)

    pu.save_pil_to_cache = save_pil_to_cache
    return True



def configure() -> dict:
    """Everything above, once per process; returns what was set (the app logs it)."""
    disable_analytics()
    return {"threads": set_threads(), "malloc_arenas_capped": cap_malloc_arenas(),
            "atomic_image_cache_writes": atomic_image_cache_writes()}
