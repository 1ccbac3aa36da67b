"""Scanner benchmark: full scan, rescan after a touch, rescan after an edit; vs tetra-rp 0.20.0.

Generates a synthetic project in a temporary directory: N files (default 2,000); about 5% are
"Flash" modules (resource configs of all 8 classes, `@remote` functions, async functions,
classes, load-balanced routes, configs imported from another module, the `Endpoint` API), the
rest ordinary modules of ~150 lines. Prints median figures over --runs runs (default 7):

- full scan: a new `Scanner` on the project (cold cache; the OS page cache is warm);
- rescan after touching one file (mtime changes, content does not);
- rescan after editing one decorated function (one file re-parsed, project re-resolved);
  both as a plain `scan()` (walks and stats every file) and with the watcher's hint
  `scan(changed_paths=[...])` (what the TUI does on a file save);
- when `tetra_rp` is importable (bench/requirements.txt): the same full scan by its
  `RemoteDecoratorScanner`, and the ratio, measured in the same run.

Usage: python bench/scan.py [--files 2000] [--runs 7] [--keep]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.scan import Scanner  # noqa: E402

CLASSES = [
    ("LiveServerless", False),
    ("CpuLiveServerless", False),
    ("ServerlessEndpoint", False),
    ("CpuServerlessEndpoint", False),
    ("LoadBalancerSlsResource", True),
    ("LiveLoadBalancer", True),
    ("CpuLoadBalancerSlsResource", True),
    ("CpuLiveLoadBalancer", True),
]


def ordinary_module(index: int) -> str:
    """~150 lines of plain Python with nothing Flash in it."""
    lines = [
        f'"""Helper module number {index}: data munging utilities."""',
        "",
        "from __future__ import annotations",
        "",
        "import itertools",
        "import math",
        "from dataclasses import dataclass",
        "",
        f"LIMIT_{index} = {index % 97 + 3}",
        "",
        "",
        "@dataclass",
        f"class Record{index}:",
        '    """A record."""',
        "",
        "    key: str",
        "    value: float = 0.0",
        "",
        "    def scaled(self, factor: float) -> float:",
        "        return self.value * factor",
        "",
    ]
    for k in range(12):
        lines += [
            "",
            f"def helper_{index}_{k}(items: list[int], offset: int = {k}) -> dict[str, float]:",
            f'    """Summarise `items` (variant {k})."""',
            "    total = 0",
            "    for a, b in itertools.pairwise(items):",
            "        if a > b:",
            "            total += a - b + offset",
            "        else:",
            "            total -= math.isqrt(abs(b - a))",
            f"    data = {{'total': float(total), 'k': {k}.0}}",
            "    return {key: val / (1 + len(items)) for key, val in data.items()}",
        ]
    lines += ["", "", f"class Cache{index}:", '    """A tiny cache."""', ""]
    lines += ["    def __init__(self) -> None:", "        self._store: dict[str, int] = {}", ""]
    lines += [
        "    @property",
        "    def size(self) -> int:",
        "        return len(self._store)",
        "",
        "    def put(self, key: str, value: int) -> None:",
        "        self._store[key] = value",
    ]
    return "\n".join(lines) + "\n"


def flash_module(index: int, package: str) -> dict[str, str]:
    """A Flash module (plus its config module): every decorator form, by turns."""
    cls, lb = CLASSES[index % len(CLASSES)]
    cpu = cls.startswith("Cpu")
    hardware = (
        "instanceIds=[CpuInstanceType.CPU3C_2_4]" if cpu else "gpus=[GpuGroup.ADA_24, GpuGroup.ANY]"
    )
    files: dict[str, str] = {}
    config_module = f"{package}/cfg_{index}.py"
    files[config_module] = (
        f'"""Config of endpoint {index}."""\n\n'
        f"from tetra_rp import {cls}, CpuInstanceType, GpuGroup\n\n"
        f"WORKERS_{index} = {index % 4 + 1}\n\n"
        f"config_{index} = {cls}(\n"
        f'    name="endpoint_{index}",\n'
        f"    {hardware},\n"
        f"    workersMin=0,\n"
        f"    workersMax=WORKERS_{index},\n"
        f'    env={{"MODE": "bench", "INDEX": "{index}"}},\n'
        ")\n"
    )
    route = (lambda m, p: f', method="{m}", path="/{p}_{index}"') if lb else (lambda m, p: "")
    body = [
        f'"""Flash functions of endpoint {index}."""',
        "",
        "import tetra_rp as tr",
        "from tetra_rp import remote",
        f"from .cfg_{index} import config_{index}",
        "",
        "",
        f"@remote(config_{index}{route('POST', 'run')})",
        f"async def run_{index}(payload: dict, retries: int = 3) -> dict:",
        '    """Process a payload."""',
        "    return {'ok': True, 'payload': payload}",
        "",
        "",
        f'@tr.remote(resource_config=config_{index}{route("GET", "info")}, dependencies=["numpy"])',
        f"def info_{index}() -> dict:",
        "    return {'index': " + str(index) + "}",
        "",
    ]
    if not lb:
        body += [
            "",
            f"@remote(config_{index})",
            f"class Model{index}:",
            "    def __init__(self, size: int = 1) -> None:",
            "        self.size = size",
            "",
            "    def predict(self, x: float) -> float:",
            "        return x * self.size",
            "",
        ]
    if (index // 20) % 2 == 0:  # every other Flash module also uses the Endpoint API
        body += [
            "",
            "from runpod_flash import Endpoint, GpuGroup",
            "",
            f'api_{index} = Endpoint(name="ep_api_{index}", cpu="cpu3c-1-2", workers=(1, 3))',
            "",
            "",
            f'@api_{index}.post("/echo")',
            f"async def echo_{index}(text: str) -> dict:",
            "    return {'text': text}",
            "",
            "",
            f'@api_{index}.get("/health")',
            f"def health_{index}() -> dict:",
            "    return {'ok': True}",
            "",
            "",
            f'@Endpoint(name="ep_qb_{index}", gpu=GpuGroup.AMPERE_80, workers=2)',
            f"async def train_{index}(steps: int = 10) -> dict:",
            "    return {'steps': steps}",
        ]
    files[f"{package}/flash_{index}.py"] = "\n".join(body) + "\n"
    return files


def generate(root: Path, count: int) -> tuple[str, str]:
    """Write the project; return (a plain file to touch, a Flash file to edit) as rel paths."""
    flash_every = 20  # ~5% of the files hold Flash code (each with its config module)
    written = 0
    index = 0
    plain: str = ""
    flash: str = ""
    while written < count:
        package = f"{index // 40:02d}_pkg" if index % 3 else f"pkg_{index // 40}"
        pkg_dir = root / package
        if not pkg_dir.exists():
            pkg_dir.mkdir(parents=True)
            (pkg_dir / "__init__.py").write_text("")
            written += 1
        if index % flash_every == 7:
            for rel, text in flash_module(index, package).items():
                (root / rel).write_text(text)
                written += 1
                if "flash_" in rel and not flash:
                    flash = rel
        else:
            rel = f"{package}/mod_{index}.py"
            (root / rel).write_text(ordinary_module(index))
            written += 1
            plain = plain or rel
        index += 1
    return plain, flash


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[..., object], **kwargs: object) -> float:
    start = time.perf_counter()
    fn(**kwargs)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    args = parser.parse_args()
    runs = max(5, args.runs)

    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-scan-"))
    root = tmp / "bench_app"
    root.mkdir()
    try:
        plain, flash = generate(root, args.files)
        n_files = sum(1 for _ in root.rglob("*.py"))
        warm = Scanner(root).scan()  # imports, page cache
        errors = [d for d in warm.diagnostics if d.severity == "error"]
        print(
            f"project: {n_files} files, {warm.stats.candidates} with Flash code, "
            f"{len(warm.manifest['resources'])} endpoints, "
            f"{len(warm.manifest['function_registry'])} functions, {len(errors)} errors"
        )
        for d in errors[:5]:
            print("  ", d.location, d.message)

        full = [timed(lambda: Scanner(root).scan()) for _ in range(runs)]

        scanner = Scanner(root)
        scanner.scan()
        plain_path = root / plain
        flash_path = root / flash
        original = flash_path.read_text()
        figures: dict[str, list[float]] = {}
        for hint in (False, True):
            hints = {"changed_paths": [plain_path]} if hint else {}
            touch = figures.setdefault("touch" + "_hint" * hint, [])
            for i in range(runs):
                stamp = time.time_ns() + i * 1_000_000
                os.utime(plain_path, ns=(stamp, stamp))
                touch.append(timed(scanner.scan, **hints))
                assert scanner.stats.read >= 1 and scanner.stats.parsed == 0, scanner.stats
            hints = {"changed_paths": [flash_path]} if hint else {}
            edit = figures.setdefault("edit" + "_hint" * hint, [])
            for i in range(runs):
                text = original.replace(
                    "return {'ok': True, 'payload': payload}",
                    f"return {{'ok': True, 'payload': payload, 'v': {i}, 'h': {hint}}}",
                )
                flash_path.write_text(text)
                edit.append(timed(scanner.scan, **hints))
                assert scanner.stats.parsed == 1, scanner.stats
            flash_path.write_text(original)
            scanner.scan()

        print(
            f"full scan (cold, new Scanner)      median {median_ms(full):8.1f} ms"
            f"   (min {min(full) * 1000:.1f} ms, runs={runs})"
        )
        print(
            f"rescan after touching one file     median {median_ms(figures['touch']):8.1f} ms"
            f"   (min {min(figures['touch']) * 1000:.1f})"
            f"   with watcher hint {median_ms(figures['touch_hint']):6.1f} ms"
        )
        print(
            f"rescan after editing one function  median {median_ms(figures['edit']):8.1f} ms"
            f"   (min {min(figures['edit']) * 1000:.1f})"
            f"   with watcher hint {median_ms(figures['edit_hint']):6.1f} ms"
        )

        try:
            from tetra_rp.cli.commands.build_utils.scanner import RemoteDecoratorScanner
        except ImportError:
            print("tetra-rp: not installed (pip install -r bench/requirements.txt) - no comparison")
            print(f"machine load average (1 min): {os.getloadavg()[0]:.2f}")
            return 0
        logging.disable(logging.WARNING)
        found = RemoteDecoratorScanner(root).discover_remote_functions()  # warm-up: imports
        # 5 runs (the minimum): it is slow.
        theirs = [
            timed(lambda: RemoteDecoratorScanner(root).discover_remote_functions())
            for _ in range(5)
        ]
        ratio = median_ms(theirs) / median_ms(full)
        print(
            f"tetra-rp 0.20.0 RemoteDecoratorScanner full scan median {median_ms(theirs):8.1f} ms"
            f"  ({len(found)} functions)"
        )
        print(f"ratio tetra-rp / flash-tui full scan: {ratio:.1f}x")
        print(f"machine load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if args.keep:
            print(f"project kept in {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
