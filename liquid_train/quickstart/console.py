"""What the quickstart shows a person, and where everything else goes.

The console carries stage headers, one progress bar per stage with several items (runs to train, models to score)
and the final tables. Everything a library or a child process prints (megatron's INFO lines and parameter lists,
the trainer's per-step lines, converter notes, Python warnings) goes to log files under ``<out>/logs/``: one file
per child command, and ``quickstart.log`` for the driver process itself. A command that fails prints the tail of
its log and the log's path, so the console stays short without hiding a failure.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers.utils import logging as hf_logging

TAIL_LINES = 25


class CommandFailed(RuntimeError):
    """A child command exited non-zero; the message names the command and its log."""


class QuickstartConsole:
    def __init__(self, out_dir: str, repo: str, env: Optional[Dict[str, str]] = None):
        self.log_dir = os.path.join(out_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.repo = repo
        self.env = env or {}
        self.console = Console(width=160, highlight=False)
        self.timings: Dict[str, float] = {}
        self._stages = 0
        handler = logging.FileHandler(os.path.join(self.log_dir, "quickstart.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        hf_logging.disable_progress_bar()  # per-model "Loading weights" bars; the stage has its own bar

    def stage(self, name: str, total: int):
        """``with console.stage("mix-pretraining", 7):`` prints the header and records the stage's time."""
        self._stages += 1
        return _Stage(self, name, f"[{self._stages}/{total}]")

    def note(self, text: str) -> None:
        self.console.print(f"  {text}", markup=False)

    def run(self, cmd: Sequence[str], label: str) -> None:
        """Run ``cmd`` in the repo with its output in ``logs/<label>.log``; a failure raises with the log's tail."""
        proc, path = self._start(cmd, label, {})
        self._check(proc.wait(), label, path)

    def run_parallel(self, jobs: Sequence[Tuple[Sequence[str], str]], workers: int, description: str,
                     env: Optional[Dict[str, str]] = None, poll_s: float = 0.5) -> None:
        """Run ``(cmd, label)`` jobs, at most ``workers`` at once, in the order given, under one progress bar that
        names the running jobs. ``env`` is added to each child's environment (its thread count). A failed job lets
        the running ones finish, starts no more, then raises with the failed log's tail."""
        pending: List[Tuple[Sequence[str], str]] = list(jobs)
        running: List[Tuple[subprocess.Popen, str, str]] = []
        failed: Optional[Tuple[int, str, str]] = None
        with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[item]}"), console=self.console) as bar:
            task = bar.add_task(description, total=len(pending), item="")
            while pending or running:
                while pending and failed is None and len(running) < max(1, workers):
                    cmd, label = pending.pop(0)
                    running.append((*self._start(cmd, label, env or {}), label))
                bar.update(task, item=", ".join(label for *_, label in running))
                time.sleep(poll_s)
                for job in list(running):
                    proc, path, label = job
                    if proc.poll() is None:
                        continue
                    running.remove(job)
                    bar.advance(task)
                    if proc.returncode != 0 and failed is None:
                        failed = (proc.returncode, label, path)
                if failed is not None and not running:
                    break
            bar.update(task, item="")
        if failed is not None:
            self._check(*failed)

    def _start(self, cmd: Sequence[str], label: str, env: Dict[str, str]) -> Tuple[subprocess.Popen, str]:
        path = os.path.join(self.log_dir, f"{label}.log")
        with open(path, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(list(cmd), cwd=self.repo, env=dict(os.environ, **self.env, **env), stdout=log,
                                    stderr=subprocess.STDOUT)
        return proc, path

    def _check(self, returncode: int, label: str, path: str) -> None:
        if returncode != 0:
            with open(path) as f:
                tail = f.readlines()[-TAIL_LINES:]
            self.console.print("".join(tail), markup=False, end="")
            raise CommandFailed(f"{label}: exit code {returncode}; full output in {path}")

    def progress(self, items: Iterable, description: str) -> Iterator:
        """Yield ``items`` under a progress bar that names the current one (the bar ends with the loop)."""
        items = list(items)
        with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[item]}"), console=self.console) as bar:
            task = bar.add_task(description, total=len(items), item="")
            for item in items:
                bar.update(task, item=str(item))
                yield item
                bar.advance(task)
            bar.update(task, item="")


class _Stage:
    def __init__(self, console: QuickstartConsole, name: str, counter: str):
        self.c, self.name, self.counter = console, name, counter

    def __enter__(self):
        self.c.console.rule(f"{self.counter} {self.name}", align="left")
        self.t = time.time()
        return self

    def __exit__(self, *exc):
        seconds = time.time() - self.t
        self.c.timings[self.name] = self.c.timings.get(self.name, 0.0) + seconds
        if exc[0] is None:
            self.c.console.print(f"  done in {seconds:.1f}s")
        return False
