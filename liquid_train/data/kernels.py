"""Compiled (numba) loops of the mixed-task index: the exact blend and the online packer.

Why compiled: both are online algorithms whose step n depends on the state left by step n-1 (Tijdeman's counts, the
packer's open rows), so they do not vectorise; in pure Python they cost ~1.5 us a sample (90 s and tens of GiB at
paper scale, on every rank). These loops are the reference implementations of `liquid_train.data.reference`
statement for statement, with the same floating-point expressions, so their output is identical (tested on random
streams). Both work on chunks of the stream and keep their state in small arrays between calls, so a 60M-sample
index is built with bounded memory, chunk by chunk, straight to disk (`liquid_train.data.index`).
"""
from __future__ import annotations

import numba
import numpy as np

ALGORITHM_EXACT, ALGORITHM_MEGATRON = 0, 1


@numba.njit(cache=True, nogil=True)
def _pick(algorithm, weights, inv_weights, eps, threshold, counts, lo, hi, n):
    """Index in [lo, hi) chosen at 1-based step ``n`` of a blend over ``weights[lo:hi]`` with ``counts[lo:hi]``.

    exact: Tijdeman (candidates ``w n - c >= eps``, earliest deadline ``(c + 1 - eps) / w``; first on ties).
    megatron: ``build_blending_indices`` (largest ``w max(n - 1, 1) - c``; first on ties)."""
    best = lo
    if algorithm == ALGORITHM_EXACT:
        best_deadline = np.inf
        for i in range(lo, hi):
            c = counts[i]
            if weights[i] * n - c >= threshold:
                deadline = (c + 1 - eps) * inv_weights[i]
                if deadline < best_deadline:
                    best = i
                    best_deadline = deadline
    else:
        x = max(float(n - 1), 1.0)
        best_error = weights[lo] * x - float(counts[lo])
        for i in range(lo + 1, hi):
            error = weights[i] * x - float(counts[i])
            if error > best_error:
                best = i
                best_error = error
    return best


@numba.njit(cache=True, nogil=True)
def blend_chunk(algorithm, task_w, task_inv, task_eps, task_thr, task_counts, n0, src_lo, src_hi, src_w, src_inv,
                src_eps, src_thr, src_counts, out_source, out_sample):
    """Stream positions ``n0 .. n0 + len(out_source) - 1`` (0-based) of the two-level blend: a task by the task
    weights, then one of that task's sources by the source weights over the task's own sub-stream. Writes the
    global source id and the sample index within that source; updates the counts in place."""
    for t in range(out_source.shape[0]):
        n = n0 + t + 1
        task = _pick(algorithm, task_w, task_inv, task_eps, task_thr, task_counts, 0, task_w.shape[0], n)
        task_counts[task] += 1
        m = task_counts[task]  # 1-based step within the task's sub-stream
        lo, hi = src_lo[task], src_hi[task]
        source = _pick(algorithm, src_w, src_inv, src_eps[task], src_thr[task], src_counts, lo, hi, m)
        out_source[t] = source
        out_sample[t] = src_counts[source]
        src_counts[source] += 1


# packer state: STATE[0] = open rows; ORDER[j] = slot of the j-th open row (oldest first); ROOM/COUNT per slot;
# RUNS[slot, r] = (sample, start, length) of the row's r-th run.
@numba.njit(cache=True, nogil=True)
def _emit(slot, count, runs, out_sample, out_start, out_length, out_rows, cursor):
    r0 = cursor[0]
    for r in range(count[slot]):
        out_sample[r0 + r] = runs[slot, r, 0]
        out_start[r0 + r] = runs[slot, r, 1]
        out_length[r0 + r] = runs[slot, r, 2]
    cursor[0] = r0 + count[slot]
    out_rows[cursor[1]] = count[slot]
    cursor[1] += 1


@numba.njit(cache=True, nogil=True)
def _drop(j, state, order, free):
    """Remove the j-th open row from the open list (its slot goes back to the free list)."""
    slot = order[j]
    for q in range(j, state[0] - 1):
        order[q] = order[q + 1]
    state[0] -= 1
    free[state[1]] = slot
    state[1] += 1


@numba.njit(cache=True, nogil=True)
def _open(state, order, free, room, count, seq_length, j):
    state[1] -= 1
    slot = free[state[1]]
    room[slot] = seq_length
    count[slot] = 0
    order[j] = slot
    state[0] += 1
    return slot


@numba.njit(cache=True, nogil=True)
def pack_chunk(footprints, splittable, base, seq_length, window, state, order, free, room, count, runs,
               out_sample, out_start, out_length, out_rows, cursor):
    """Pack stream samples ``base + i`` (footprints[i], splittable[i]) as `reference.build_pack_index` does.

    Emitted rows go to ``out_*`` from ``cursor = [runs written, rows written]``. Stops before a sample whose
    worst case might not fit the output and returns how many samples it consumed (the caller drains and calls
    again); the open rows stay in the state arrays."""
    cap_runs, cap_rows = out_sample.shape[0], out_rows.shape[0]
    for i in range(footprints.shape[0]):
        f = footprints[i]
        worst_rows = f // seq_length + 3
        if cursor[0] + worst_rows * seq_length > cap_runs or cursor[1] + worst_rows > cap_rows:
            return i
        sample = base + i
        if splittable[i]:
            start = 0
            while start < f:
                if state[0] == 0:
                    _open(state, order, free, room, count, seq_length, 0)
                slot = order[0]
                take = min(room[slot], f - start)
                c = count[slot]
                runs[slot, c, 0] = sample
                runs[slot, c, 1] = start
                runs[slot, c, 2] = take
                count[slot] = c + 1
                room[slot] -= take
                start += take
                if room[slot] == 0:
                    _emit(slot, count, runs, out_sample, out_start, out_length, out_rows, cursor)
                    _drop(0, state, order, free)
            continue
        best = -1
        best_room = seq_length + 1
        for j in range(state[0]):
            r = room[order[j]]
            if f <= r and r < best_room:
                best = j
                best_room = r
        if best < 0:
            if state[0] >= window:
                fullest = 0
                for j in range(1, state[0]):
                    if room[order[j]] < room[order[fullest]]:
                        fullest = j
                _emit(order[fullest], count, runs, out_sample, out_start, out_length, out_rows, cursor)
                _drop(fullest, state, order, free)
            if f == seq_length:
                r0 = cursor[0]
                out_sample[r0] = sample
                out_start[r0] = 0
                out_length[r0] = f
                cursor[0] = r0 + 1
                out_rows[cursor[1]] = 1
                cursor[1] += 1
                continue
            slot = _open(state, order, free, room, count, seq_length, state[0])
            room[slot] = seq_length - f
            runs[slot, 0, 0] = sample
            runs[slot, 0, 1] = 0
            runs[slot, 0, 2] = f
            count[slot] = 1
        else:
            slot = order[best]
            room[slot] -= f
            c = count[slot]
            runs[slot, c, 0] = sample
            runs[slot, c, 1] = 0
            runs[slot, c, 2] = f
            count[slot] = c + 1
            if room[slot] == 0:
                _emit(slot, count, runs, out_sample, out_start, out_length, out_rows, cursor)
                _drop(best, state, order, free)
    return footprints.shape[0]


@numba.njit(cache=True, nogil=True)
def flush_open(state, order, count, runs, out_sample, out_start, out_length, out_rows, cursor):
    """Emit the rows still open, oldest first (finite validation streams)."""
    for j in range(state[0]):
        _emit(order[j], count, runs, out_sample, out_start, out_length, out_rows, cursor)
    state[0] = 0
