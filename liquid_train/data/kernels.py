"""Compiled (numba) loops of the mixed-task index: the exact blend and the online packer.

Why compiled: both are online algorithms whose step n depends on the state left by step n-1 (Tijdeman's counts, the
packer's open rows), so they do not vectorise; in pure Python they cost ~1.5 us a sample (90 s and tens of GiB at
paper scale, on every rank). These loops are the reference implementations of `liquid_train.data.reference`
statement for statement, with the same floating-point expressions, so their output is identical (tested on random
streams). Both work on chunks of the stream and keep their state in small arrays between calls, so a 60M-sample
index is built with bounded memory, chunk by chunk, straight to disk (`liquid_train.data.index`).
"""
from __future__ import annotations

import functools

import numpy as np

try:
    import numba
except ImportError:  # a machine that only trains from a built index (the GPU suite's bare box) may lack numba:
    numba = None     # then building an index there is one clear error, not a slow pure-Python path


def _jit(**options):
    """``numba.njit(**options)``, or, without numba, a function that says what is missing when called."""
    if numba is not None:
        return numba.njit(**options)

    def missing(fn):
        @functools.wraps(fn)
        def refuse(*args, **kwargs):
            raise ImportError(f"building the mixed-task index ({fn.__name__}) needs numba: pip install numba, or "
                              f"build the index ahead of time with `python -m liquid_train.data index`")
        return refuse

    return missing

ALGORITHM_EXACT, ALGORITHM_MEGATRON = 0, 1


@_jit(cache=True, nogil=True, inline="always")
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


@_jit(cache=True, nogil=True)
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


# packer state: STATE = [open rows, free slots, rows emitted so far]; ORDER[j] = slot of the j-th open row (oldest
# first); ROOM/COUNT per slot; RUNS[slot, r] = (sample, start, length) of the row's r-th run.
# OUT = (sample, start, length, runs per row, cursor = [runs written, rows written]) receives the emitted rows.
# TALLY = (source of every stream sample, begun[block, source], used[block], block size): per block of emitted rows,
# the samples that begin there per source and the positions used (block size 0: no tally).
@_jit(cache=True, nogil=True, inline="always")
def _emit_run(sample, start, length, out, tally, row):
    out_sample, out_start, out_length, out_rows, cursor = out
    r = cursor[0]
    out_sample[r] = sample
    out_start[r] = start
    out_length[r] = length
    cursor[0] = r + 1
    source_of, begun, used, every = tally
    if every > 0:
        block = row // every
        used[block] += length
        if start == 0:
            begun[block, source_of[sample]] += 1


@_jit(cache=True, nogil=True, inline="always")
def _emit(slot, count, runs, state, out, tally):
    row = state[2]
    for r in range(count[slot]):
        _emit_run(runs[slot, r, 0], runs[slot, r, 1], runs[slot, r, 2], out, tally, row)
    out[3][out[4][1]] = count[slot]
    out[4][1] += 1
    state[2] = row + 1


@_jit(cache=True, nogil=True, inline="always")
def _drop(j, state, order, free):
    """Remove the j-th open row from the open list (its slot goes back to the free list)."""
    slot = order[j]
    for q in range(j, state[0] - 1):
        order[q] = order[q + 1]
    state[0] -= 1
    free[state[1]] = slot
    state[1] += 1


@_jit(cache=True, nogil=True, inline="always")
def _open(state, order, free, room, count, seq_length, j):
    state[1] -= 1
    slot = free[state[1]]
    room[slot] = seq_length
    count[slot] = 0
    order[j] = slot
    state[0] += 1
    return slot


@_jit(cache=True, nogil=True)
def pack_chunk(footprints, splittable, base, seq_length, window, state, order, free, room, count, runs, out, tally):
    """Pack stream samples ``base + i`` (footprints[i], splittable[i]) as `reference.build_pack_index` does.

    Stops before a sample whose worst case might not fit the output (or the tally) and returns how many samples
    it consumed (the caller drains and calls again); the open rows stay in the state arrays."""
    cap_runs, cap_rows = out[0].shape[0], out[3].shape[0]
    every = tally[3]
    cap_tally = tally[2].shape[0] * every if every > 0 else np.iinfo(np.int64).max
    cursor = out[4]
    for i in range(footprints.shape[0]):
        f = footprints[i]
        worst_rows = f // seq_length + 3
        if (cursor[0] + worst_rows * seq_length > cap_runs or cursor[1] + worst_rows > cap_rows
                or state[2] + worst_rows > cap_tally):
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
                    _emit(slot, count, runs, state, out, tally)
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
                _emit(order[fullest], count, runs, state, out, tally)
                _drop(fullest, state, order, free)
            if f == seq_length:
                _emit_run(sample, 0, f, out, tally, state[2])
                out[3][cursor[1]] = 1
                cursor[1] += 1
                state[2] += 1
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
                _emit(slot, count, runs, state, out, tally)
                _drop(best, state, order, free)
    return footprints.shape[0]


@_jit(cache=True, nogil=True)
def flush_open(state, order, count, runs, out, tally):
    """Emit the rows still open, oldest first (finite validation streams)."""
    for j in range(state[0]):
        _emit(order[j], count, runs, state, out, tally)
    state[0] = 0


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@_jit(cache=True, nogil=True, inline="always")
def _splitmix64(x):
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


@_jit(cache=True, nogil=True)
def pair_footprints(t2i, units, first_index, lengths, first_seq, seq_step, drop_key, instruction_key,
                    cfg_drop_prob, instruction_lengths, prompt_length, seq_length, out):
    """Footprints of T2I (``t2i``) or I2T samples ``first_index + j`` whose pair documents are ``units[j]``, as
    `LiquidTemplates.t2i_footprints` / ``i2t_footprints`` compute them (``*_key``: the per-purpose part of
    `templates.sample_hash`, so ``sample_hash(index) = splitmix64(key ^ index)``). The caption is sequence
    ``first_seq + seq_step * unit`` of ``lengths`` and the codes the next one: one read of one cache line."""
    num_instructions = np.uint64(instruction_lengths.shape[0])
    for j in range(units.shape[0]):
        seq = first_seq + seq_step * units[j]
        caption = np.int64(lengths[seq])
        image = np.int64(lengths[seq + 1])
        if t2i:
            index = np.uint64(first_index + j)
            uniform = float(_splitmix64(drop_key ^ index) >> np.uint64(11)) / 9007199254740992.0
            which = np.int64(_splitmix64(instruction_key ^ index) % num_instructions)
            instruction = instruction_lengths[which]
            budget = seq_length - 3 - image - instruction
            if uniform < cfg_drop_prob:
                text = 1
            else:
                text = min(caption, budget) + instruction
            out[j] = text + image + 3
        else:
            budget = seq_length - 3 - image - prompt_length
            out[j] = image + prompt_length + min(caption, budget) + 3
