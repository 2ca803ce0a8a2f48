"""What a bare GPU machine needs to run the suite, and the command that runs it there.

The target machine: Python 3.12, torch 2.11 + CUDA 13 (with triton, numpy, pillow, pyyaml ... preinstalled), no
Transformer Engine, no megatron-core, no network, at most 64 MiB carried along (the working tree included).
Transformer Engine cannot come (its core wheel alone is 179 MB and ``transformer-engine-torch`` is a source build),
so the suite reports its TE parts skipped there. The pure-Python (or small cp312) packages it lacks are
:data:`WHEELS`: downloaded here with pip into ``.whl/`` (ignored by git), installed there into a target directory
put on ``PYTHONPATH``.

megatron-core is the newest release the code supports (``setup.py``'s range): 0.17 and later need Python >= 3.12,
which that machine has. :func:`suite_imports` lists the third-party packages the suite's modules import at module
level, so a test can check that each one is either on the machine (:data:`TARGET_IMAGE`) or carried.
"""
from __future__ import annotations

import argparse
import ast
import glob
import os
import subprocess
import sys
from typing import Dict, List, Sequence, Set

WHEELS: Dict[str, str] = {
    "megatron-core": "0.18.0",  # needs torch, numpy, packaging (all on the machine)
    "omegaconf": "2.4.0",  # needs PyYAML
    "webdataset": "1.0.2",  # needs braceexpand, numpy, PyYAML
    "braceexpand": "0.1.7",
    "xxhash": "4.1.0",  # checkpoint manifests (0.2 MB); numba (llvmlite alone is 57 MB) stays behind: the suite
}                       # builds no mixed-task index
TARGET_IMAGE = frozenset({"torch", "triton", "numpy", "pillow", "pyyaml", "packaging", "tqdm", "scipy",
                          "psutil", "einops", "safetensors", "tokenizers", "transformers", "pyarrow", "rich"})
"""Distributions the target machine's image already holds (of those the project uses)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
CARRY_LIMIT = 64 * 2**20
SITE = "/tmp/site"
SUITE_TIMEOUT_S = 540
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "megatron": "megatron-core"}
OPTIONAL_ON_TARGET = frozenset({"numba"})
"""Imported where available, not needed by the suite (``liquid_train.data.kernels`` refuses without it)."""


def _dist(top: str) -> str:
    return MODULE_TO_DIST.get(top, top.replace("_", "-").lower())


def wheel_files(dest: str) -> Dict[str, List[str]]:
    """The wheel files in ``dest`` for each carried package."""
    out = {}
    for name in WHEELS:
        stem = name.replace("-", "_")
        out[name] = sorted(glob.glob(os.path.join(dest, f"{stem}-*.whl")))
    return out


def download(dest: str) -> None:
    """pip-download every wheel of :data:`WHEELS` for CPython 3.12 on x86-64 Linux (binary only, no dependencies:
    each dependency is listed itself)."""
    os.makedirs(dest, exist_ok=True)
    have = wheel_files(dest)
    for name, version in WHEELS.items():
        stale = [f for f in have[name] if f"-{version}-" not in os.path.basename(f)]
        for f in stale:  # two versions of one package stop the whole install there
            os.unlink(f)
        if any(f"-{version}-" in os.path.basename(f) for f in have[name]):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "--dest", dest]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd + [f"{name}=={version}"], check=True)


def tree_bytes(repo: str) -> int:
    """Bytes of the working tree that travels to the GPU machine: tracked and untracked-not-ignored files."""
    names = subprocess.run(["git", "-C", repo, "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    return sum(os.path.getsize(os.path.join(repo, n)) for n in names if n and os.path.isfile(os.path.join(repo, n)))


def device_command(wheel_dir: str = ".whl", out: str = "$OUT", extra: str = "") -> str:
    """The one shell command that installs the carried wheels and runs the suite on the GPU machine."""
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target {SITE} "
            f"{wheel_dir}/*.whl && export PYTHONPATH={SITE}:$PWD PYTHONUNBUFFERED=1 && set -o pipefail && "
            f"timeout {SUITE_TIMEOUT_S} python3 benchmarks/gpu_suite.py --out {out}{extra} 2>&1 | tee {out}/log.txt")


def _module_level_imports(path: str, module: str) -> Set[str]:
    """Modules imported at module level (not inside functions, classes or try blocks) of one file, relative
    imports resolved against ``module``; ``from m import n`` yields ``m`` and ``m.n`` (n may be a module)."""
    tree = ast.parse(open(path).read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def suite_imports(root: str = "liquid_train.gpu_suite.runner") -> Set[str]:
    """Distributions that the project modules reachable from ``root`` import at module level (the project's own
    packages and the standard library left out)."""
    seen: Set[str] = set()
    third: Set[str] = set()
    todo = [root, "liquid_train.gpu_suite"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if top not in ("liquid_train", "data_pipeline"):
            third.add(_dist(top))
            continue
        path = _module_file(name)
        if path is None:
            continue  # ``from module import name`` where name is not a module
        todo.extend(_module_level_imports(path, name))
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
    return third


def _module_file(name: str):
    """The source file of a project module (``a.b`` -> ``<repo>/a/b.py`` or ``<repo>/a/b/__init__.py``)."""
    base = os.path.join(REPO, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def main(argv: Sequence[str] = None) -> int:
    ap = argparse.ArgumentParser(description="Download the wheels the GPU suite needs on a bare GPU machine and "
                                             "print the command that runs it there.")
    ap.add_argument("--dest", default=".whl", help="where to put the wheels (default: .whl, ignored by git)")
    ap.add_argument("--list", action="store_true", help="only list what to bring, download nothing")
    args = ap.parse_args(argv)
    repo = REPO
    dest = args.dest if os.path.isabs(args.dest) else os.path.join(repo, args.dest)
    if not args.list:
        download(dest)
    files = wheel_files(dest)
    print("wheels to carry (CPython 3.12, x86-64 Linux; the machine has "
          f"{', '.join(sorted(TARGET_IMAGE))}):")
    total = 0
    for name, version in WHEELS.items():
        sizes = [os.path.getsize(f) for f in files[name]]
        total += sum(sizes)
        where = ", ".join(os.path.basename(f) for f in files[name]) or "not downloaded"
        print(f"  {name}=={version}: {where} ({sum(sizes) / 2**20:.2f} MiB)")
    tree = tree_bytes(repo)
    print(f"carry: wheels {total / 2**20:.2f} MiB + working tree {tree / 2**20:.2f} MiB = "
          f"{(total + tree) / 2**20:.2f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    missing = [n for n, f in files.items() if not f]
    if total + tree > CARRY_LIMIT:
        print("gpu_suite_wheels: too much to carry; leave something out", file=sys.stderr)
        return 2
    if missing and not args.list:
        print(f"gpu_suite_wheels: not downloaded: {missing}", file=sys.stderr)
        return 2
    rel = os.path.relpath(dest, repo)
    print(f"run on the GPU machine, from the repository root, carrying {rel} (timeout {SUITE_TIMEOUT_S + 30} s):")
    print(f"  {device_command(rel)}")
    print(f"rerun one section: add --only NAME to the suite's arguments, e.g.\n"
          f"  {device_command(rel, extra=' --only mfu')}")
    return 0
