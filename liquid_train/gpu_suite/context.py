"""What every section of the GPU suite shares: the run's context (device, dry run, time budget, scratch space),
the section outcome types, timing that waits for the GPU, memory bookkeeping, and the guard that keeps the suite
off the network.

Why a network guard: the suite is meant for a bare GPU machine that reaches nothing outside it. Everything it
needs is carried along; anything that tries to connect to a non-local address (a hub download, a telemetry
client) is refused with one error naming the address, so that such a dependency shows up in the report as a
failure instead of as a hang.
"""
from __future__ import annotations

import gc
import ipaddress
import math
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import torch


class Skip(Exception):
    """Raised by a section (or a part of one) that cannot run here; the message is the reason, ``results`` what
    was computed before it found out (a dry run exercising the code)."""

    def __init__(self, reason: str, results: Optional[Dict] = None):
        super().__init__(reason)
        self.results = results or {}


@dataclass
class Context:
    """One run of the suite."""

    dry_run: bool
    device: torch.device
    work_dir: str
    """Scratch space (synthetic images, run directories); not the output directory."""
    deadline: float
    """``time.monotonic()`` by which the whole suite must be done."""
    threads: int
    log: List[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, message: str) -> None:
        """Progress for the person running the suite (also kept in the JSON)."""
        line = f"[gpu_suite {time.strftime('%H:%M:%S')}] {message}"
        self.log.append(line)
        print(line, flush=True)


def sync(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


@contextmanager
def timed(ctx: Context) -> Iterator[Dict[str, float]]:
    """``with timed(ctx) as t: ...`` then ``t["s"]``: wall seconds of the block, measured with CUDA events on a GPU
    (the block's kernels included: the end event is waited for), ``perf_counter`` on CPU."""
    out = {"s": float("nan")}
    if ctx.cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield out
        end.record()
        end.synchronize()
        out["s"] = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        yield out
        out["s"] = time.perf_counter() - t0


def free_memory(ctx: Context) -> None:
    """Drop what earlier parts left (cycles included) and reset the peak counter, so the next peak is its own."""
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_allocated(ctx: Context) -> Optional[int]:
    """Peak bytes allocated by torch on the GPU since the last :func:`free_memory`; None on CPU."""
    return int(torch.cuda.max_memory_allocated()) if ctx.cuda else None


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    a, b = a.detach().double(), b.detach().double()
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def check(value: float, limit: float, what: str) -> Dict:
    """A compared number: passes when ``value <= limit`` (NaN never passes)."""
    value = float(value)
    return {"value": value, "limit": limit, "what": what, "ok": bool(value <= limit)}


# --- no network -------------------------------------------------------------------------------------------------
_REAL_CONNECT = socket.socket.connect
_REAL_CONNECT_EX = socket.socket.connect_ex
REFUSED: List[str] = []


def _local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths, abstract sockets
        return True
    host = address[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "")


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            REFUSED.append(repr(address))
            raise ConnectionRefusedError(f"gpu_suite: no network on the GPU machine; refused a connection to "
                                         f"{address!r} (carry what the code needs instead)")
        return real(self, address)
    return connect


def forbid_network() -> None:
    """Refuse every connection to a non-loopback address from this process (and the workers it forks)."""
    socket.socket.connect = _guarded(_REAL_CONNECT)
    socket.socket.connect_ex = _guarded(_REAL_CONNECT_EX)


def allow_network() -> None:
    """Undo :func:`forbid_network`."""
    socket.socket.connect = _REAL_CONNECT
    socket.socket.connect_ex = _REAL_CONNECT_EX


def part(ctx: Context, label: str, fn, *args, **kwargs) -> Dict:
    """Run one part of a section: ``{"status": "ran", **result}``, or ``skipped: <reason>`` (:class:`Skip`), or
    ``failed: <error>`` with the traceback's end, so that one part's failure leaves the section's other parts."""
    try:
        result = fn(*args, **kwargs)
        return {"status": "ran", **(result or {})}
    except Skip as skip:
        return {"status": f"skipped: {skip}", **skip.results}
    except Exception as exc:  # recorded, not raised: the other parts still run
        ctx.say(f"{label}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                "traceback": traceback.format_exc(limit=8)[-3000:]}
    finally:
        free_memory(ctx)
