"""Generation speed of the synthetic benchmark, optionally against an earlier copy of its code.

    python -m benchmarks.synthetic_speed [--n 40] [--repeats 3] [--size 256 512]
    python -m benchmarks.synthetic_speed --before /tmp/synthetic_before.py   # old vs. current, one run

Images per second (scene generation + rendering, CPU time of the process) per style, the best of
``--repeats`` runs of ``--n`` scenes. With ``--before`` (an earlier ``dgseg/data/synthetic.py`` kept as a
single file, or the folder of an earlier ``synthetic`` package) both versions are timed in the same
process, their runs interleaved, so machine load affects both alike; the table gives current / before.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import dgseg.data.synthetic as current


def load_before(path: Path) -> ModuleType:
    """Import an earlier copy of the synthetic code as ``dgseg.data._synthetic_before`` (so its relative
    imports of ``dgseg.data.labels`` resolve)."""
    name = "dgseg.data._synthetic_before"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--before {path}: not a Python module or package folder")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def seconds(module: ModuleType, style: str, n: int, first: int, size: tuple[int, int]) -> float:
    """CPU seconds to generate and render scenes ``first .. first + n - 1`` of the train split."""
    start = time.process_time()
    for i in range(first, first + n):
        module.render(module.make_scene(0, "train", i, size), style)
    return time.process_time() - start


def measure(
    modules: dict[str, ModuleType], n: int, repeats: int, size: tuple[int, int]
) -> dict[str, dict[str, float]]:
    """{style: {version: images per second}}, the versions' runs interleaved per repeat."""
    for module in modules.values():  # textures and noise tiles loaded once, outside the timing
        module.render(module.make_scene(0, "train", 10**6, size), "photo")
        module.render(module.make_scene(0, "train", 10**6, size), "night")
    result = {}
    for style in current.STYLES:
        best = dict.fromkeys(modules, float("inf"))
        for rep in range(repeats):
            for version, module in modules.items():
                best[version] = min(best[version], seconds(module, style, n, rep * n, size))
        result[style] = {version: n / t for version, t in best.items()}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="an earlier synthetic.py (or synthetic/ folder)")
    parser.add_argument("--n", type=int, default=40, help="scenes per timed run (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per style, best kept (default 3)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 512], metavar=("H", "W"))
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error(f"--n and --repeats must be >= 1, got {args.n} and {args.repeats}")
    modules = {"current": current}
    if args.before is not None:
        if not args.before.exists():
            parser.error(f"--before {args.before}: no such file or folder")
        modules = {"before": load_before(args.before), "current": current}
    size = (args.size[0], args.size[1])
    table = measure(modules, args.n, args.repeats, size)
    versions = list(modules)
    print(f"images/s, {size[1]}x{size[0]}, best of {args.repeats} x {args.n} scenes, CPU time")
    header = "style    " + "".join(f"{v:>10}" for v in versions)
    print(header + ("  current/before" if len(versions) == 2 else ""))
    for style, row in table.items():
        line = f"{style:<9}" + "".join(f"{row[v]:10.1f}" for v in versions)
        if len(versions) == 2:
            line += f"{row['current'] / row['before']:16.3f}"
        print(line)
    if len(versions) == 2:
        total = {v: len(table) / sum(1.0 / row[v] for row in table.values()) for v in versions}
        print(
            f"{'all':<9}"
            + "".join(f"{total[v]:10.1f}" for v in versions)
            + f"{total['current'] / total['before']:16.3f}"
        )


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.synthetic_speed", main))
