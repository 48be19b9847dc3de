"""``dgseg bench``: the method comparison on the synthetic benchmark, several seeds, built in pieces.

Each (method, seed) pair is one ordinary run folder ``OUT/<method>/seed<k>/`` trained through the same
``train`` code as real experiments, from ``configs/bench.yaml`` (or ``--config``). During training only
the source style is validated (every ``train.eval_interval`` iterations: the plateau check); the
finished model is then evaluated on every ``data.val`` domain. A run with ``summary.json`` is finished
and never trained again; a run with a checkpoint but no summary was interrupted and resumes from it; a
folder with neither is started afresh, unless its log records trained iterations (its checkpoints were
lost): that one is refused by name rather than erased. After every run the combined table (``bench.md``,
``bench.json``) and figures (``bench.png``: mIoU per domain, mean and min-max over seeds;
``bench_curves.png``: source validation mIoU against iteration) are rewritten from the runs that exist.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from dgseg.bench_child import _STOPPING, fair_share, run_child, stop_children, train_in_child
from dgseg.bench_report import aggregate, collect, read_run_facts, write_report
from dgseg.config import Config, config_to_dict, domain_name, dump_config, load_config, source_entry
from dgseg.demo import METHODS as DEMO_METHODS
from dgseg.demo import method_overrides
from dgseg.machine import usable_cores

BENCH_CONFIG = Path(__file__).parent / "configs" / "bench.yaml"
METHODS = {
    **DEMO_METHODS,  # rein, frozen, full, lora (rank 8) as in `dgseg demo --compare`
    "rein-nolink": ["model.adapter.link=false"],
    "adaptformer": ["model.adapter.name=adaptformer", "model.adapter.link=false"],
    "vpt": ["model.adapter.name=vpt", "model.adapter.link=false"],
}
"""Method -> overrides of the bench config. The paper's definitions: Rein links its tokens to the head's
queries; the others use the head's own queries; ``full`` trains the backbone at ``adapter.lr_mult`` x lr."""
PAPER_METHODS = ["rein", "frozen", "full", "lora", "adaptformer", "vpt"]


def bench_config(method: str, seed: int, iters: int | None, overrides: list[str],
                 config: str | Path = BENCH_CONFIG) -> Config:
    """The full config of one run (all ``data.val`` domains; :func:`training_config` narrows it)."""
    if method not in METHODS:
        raise ValueError(f"bench: unknown method '{method}'; choose from {', '.join(METHODS)}")
    if iters is not None and iters < 1:
        raise ValueError(f"bench: --iters {iters}: expected 1 or more iterations per run")
    extra = [f"train.seed={seed}"] + ([f"train.max_iters={iters}"] if iters is not None else [])
    cfg = load_config(config, method_overrides("bench", METHODS, method, list(overrides) + extra))
    cfg.name = f"bench-{method}-seed{seed}"
    return cfg


def training_config(cfg: Config) -> Config:
    """The same run validating only the source style while it trains (cheap periodic plateau check)."""
    import copy

    if cfg.data.source is None:
        raise ValueError("bench: the config needs data.source (the style it trains on) to validate during training")
    train_cfg = copy.deepcopy(cfg)
    entry = source_entry(train_cfg)
    if entry is not None and domain_name(entry, [entry]) != cfg.data.source:  # a name:split row: keep its name
        entry.label = cfg.data.source
    train_cfg.data.val = [] if entry is None else [entry]
    return train_cfg


def run_state(run_dir: Path, cfg: Config) -> str:
    """'done' (summary.json), 'resume' (a checkpoint), or 'new'. Refuses, by name: a run or method folder that
    is a symbolic link (the bench writes through none), a folder trained to another setting, and one whose log
    records trained iterations past the first checkpoint, or cannot be read, but which has no checkpoint (a
    fresh start would bury it)."""
    from dgseg.bench_report import read_summary
    from dgseg.engine.checkpoint import CheckpointError, latest_checkpoint

    for folder in (run_dir.parent, run_dir):
        if folder.is_symlink():
            raise ValueError(f"bench: {folder} is a symbolic link; the bench writes its runs only into real "
                             f"folders under --out (replace the link with the folder, or use another --out)")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"bench: {folder} is a file; the bench keeps each run in a folder --out/<method>/"
                             f"seed<k> (move the file away, or use another --out)")
    summary = run_dir / "summary.json"
    stored = run_dir / "config.yaml"
    wanted = config_to_dict(training_config(cfg))
    if summary.exists():
        recorded = read_summary(summary, need=()).get("config")
        if recorded is not None:
            recorded = _normalised(recorded)
            if recorded != config_to_dict(cfg):
                raise ValueError(_setting_error(run_dir, recorded, config_to_dict(cfg)))
        return "done"
    try:
        latest = latest_checkpoint(run_dir)
    except CheckpointError as e:  # a damaged pointer: this run is refused, the others still train
        raise ValueError(f"bench: {e}") from None
    if latest is not None:
        import yaml

        recorded = _normalised(yaml.safe_load(stored.read_text()))
        if recorded != wanted:
            raise ValueError(_setting_error(run_dir, recorded, wanted))
        return "resume"
    trained = _logged_iterations(run_dir / "log.jsonl")
    if trained >= cfg.train.checkpoint_interval:  # it had a checkpoint once; earlier, a crash left none to lose
        raise ValueError(
            f"bench: {run_dir} has a training log to iteration {trained:,} but no checkpoint to resume from "
            f"(its checkpoints/ folder is gone: deleted, or not kept between sittings, e.g. git-ignored); "
            f"move or delete that folder to train the run again from iteration 0")
    return "new"


def _logged_iterations(log: Path) -> int:
    """The last training iteration a run's ``log.jsonl`` records (0 when it has none): what a restart would
    bury. A log with lines that are not JSON records is refused: how far it got cannot be told."""
    from dgseg.engine.run_folder import trained_iterations
    from dgseg.viz import read_log

    trained = trained_iterations(log)
    if trained is None:
        bad = read_log(log)[1]
        raise ValueError(f"bench: {log}: line {', '.join(map(str, bad[:5]))} not a JSON record, and the run has "
                         f"no checkpoint; move or delete {log.parent} to train the run again from iteration 0")
    return trained


def _normalised(recorded: dict) -> dict:
    """A run's recorded config read through today's schema: a key added to dgseg since the run was trained
    takes its default, so runs committed earlier (``benchmarks/bench``) stay comparable when the default
    keeps the old behaviour; a changed value is still a different setting."""
    from dgseg.config import config_from_dict

    return config_to_dict(config_from_dict(recorded))


def _setting_error(run_dir: Path, recorded: dict, wanted: dict, most: int = 4, width: int = 80) -> str:
    """Names at most ``most`` differing keys, each value cut to ``width`` characters (whole ``data.val`` lists
    run to thousands), so the refusal reads as one line in ``--status`` too."""
    diffs = _diff(recorded, wanted)
    shown = "; ".join(f"{k}: run has {_cut(repr(a), width)}, asked {_cut(repr(b), width)}" for k, a, b in diffs[:most])
    more = f"; and {len(diffs) - most} more" if len(diffs) > most else ""
    return (f"bench: {run_dir} was trained with another setting ({shown}{more}); use another --out, or delete "
            f"that folder to train it again")


def _diff(a, b, key: str = "") -> list[tuple[str, object, object]]:
    """(key, a's value, b's value) where two configs differ; lists of one length entry by entry (``data.val[2].length``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in [*a, *(k for k in b if k not in a)]
                for d in _diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{key}.{k}" if key else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{key}[{i}]")]
    return [] if a == b else [(key, a, b)]


_ABSENT = type("absent", (), {"__repr__": lambda self: "(absent)"})()
"""A key one config lacks: not the same as one set to null."""


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_one(method: str, seed: int, cfg: Config, run_dir: Path, isolate: bool = True,
            threads: int | None = None, fair_threads=None, poll_s: float = 5.0) -> str:
    """Bring one run to 'done'; returns what was needed ('done', 'resume' or 'new'). With ``isolate`` in a
    child process (``bench_child.train_in_child``: ``fair_threads`` widens it when runs beside it finish)."""
    state = run_state(run_dir, cfg)
    if state == "done":
        return state
    if state == "new" and run_dir.exists():  # a start that died before its first checkpoint
        set_aside(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isolate:
        train_in_child(f"{method} seed {seed}", cfg, training_config(cfg), run_dir, state == "resume", threads,
                       fair_threads, poll_s)
    else:
        run_child(dump_config(training_config(cfg)), dump_config(cfg), str(run_dir), state == "resume",
                  str(run_dir / "summary.json"), threads)
    return state


def set_aside(run_dir: Path) -> Path | None:
    """Moves what a folder holds into ``previous-<UTC time>/`` inside it (nothing is deleted), so a run can
    start in it afresh; None when it holds nothing."""
    from dgseg.engine.run_folder import move_aside

    entries = [p for p in run_dir.iterdir() if not p.name.startswith("previous-")]
    if not entries:
        return None
    archive = move_aside(run_dir, entries)
    print(f"   bench: {run_dir} held a start that died before its first checkpoint; its files were moved to "
          f"{archive.name}/",
          flush=True)
    return archive


def _finished(run_dir: Path, cfg: Config) -> bool:
    try:
        return run_state(run_dir, cfg) == "done"
    except ValueError:  # trained to another setting: refused when its turn comes
        return False


def run_order(methods: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The order in which the runs are trained: seed by seed, every method's run of a seed before any run of
    the next seed, so a comparison built over several sittings holds every method early (one seed each)
    instead of all the seeds of the first methods."""
    return [(m, s) for s in seeds for m in methods]


def resume_first(plan: list, out: Path) -> list:
    """``plan`` with the interrupted runs (a checkpoint, not finished) first, the furthest trained (the largest
    share of its iterations) first among them, then the rest in ``plan``'s order: a comparison finishes the
    runs it started before it starts new ones (a folder :func:`run_state` refuses keeps its place; the refusal
    comes when its turn does)."""
    from dgseg.engine.checkpoint_read import latest_step

    def done_share(item) -> float:
        method, seed, cfg = item
        run_dir = out / method / f"seed{seed}"
        try:
            return latest_step(run_dir) / cfg.train.max_iters if run_state(run_dir, cfg) == "resume" else -1.0
        except Exception:  # noqa: BLE001 - a folder the run's own turn refuses, by name (bring_to_done)
            return -1.0

    return sorted(plan, key=lambda item: -done_share(item))  # stable: plan's order among equals and new runs


def run_bench(methods: list[str], seeds: list[int], out: str | Path = "runs/bench", iters: int | None = None,
              overrides: list[str] | None = None, config: str | Path | None = BENCH_CONFIG, isolate: bool = True,
              threads: int | None = None, jobs: int = 1) -> dict:
    """Train what is missing of methods x seeds into ``out``, ``jobs`` runs at a time, then write the combined
    report (also after every finished run).

    ``jobs`` > 1 runs that many child processes side by side with ``threads`` (default: the cores divided
    by ``jobs``, and by fewer once fewer runs are left: ``bench_child``) torch threads each: for the small
    bench model more throughput than one run on every core
    (measured on a 2-core AMD EPYC, bf16: a frozen run took 0.53 s per iteration at 1 thread beside another
    run, 0.31 s alone at 2 threads, so about 1.2 x the iterations per second)."""
    from dgseg.models.pretrained import EMBEDDED, embedded_weights_path

    if jobs < 1:
        raise ValueError(f"bench: --jobs {jobs}: expected 1 or more runs at a time")
    if threads is not None and threads < 1:
        raise ValueError(f"bench: --threads {threads}: expected 1 or more torch threads per run")
    if iters is not None and iters < 1:
        raise ValueError(f"bench: --iters {iters}: expected 1 or more iterations per run")
    _check_bench_folder(out)
    if jobs > 1 and not isolate:
        raise ValueError("bench: --jobs > 1 needs every run in its own process (isolate=True)")
    out = Path(out)
    config = config or BENCH_CONFIG
    pairs = list(dict.fromkeys(run_order(methods, seeds)))  # a method or seed named twice is one run folder
    plan = resume_first([(m, s, bench_config(m, s, iters, overrides or [], config)) for m, s in pairs], out)
    aggregate(collect(out), out)  # a file the report cannot read is refused now, not after hours of training
    for m, s in pairs:
        read_run_facts(out / m / f"seed{s}")  # an unfinished run's run.json too
    for weights in {cfg.model.backbone.weights for _, _, cfg in plan} & set(EMBEDDED):
        embedded_weights_path(weights)  # import once, before any child starts
    out.mkdir(parents=True, exist_ok=True)  # after every check: a refused bench makes no folder
    report_lock = threading.Lock()
    _STOPPING.clear()  # a bench stopped before in this process
    finished = {(m, s) for m, s, cfg in plan if _finished(out / m / f"seed{s}", cfg)}  # not counted as unfinished
    fair_threads, unfinished = None, [len(plan) - len(finished)]
    if jobs > 1 and threads is None:  # cores / jobs each, and more for the last runs when the others finish
        cores = usable_cores()
        threads = max(1, cores // jobs)

        def fair_threads() -> int:
            return fair_share(cores, jobs, unfinished[0])

    def bring_to_done(method: str, seed: int, cfg: Config) -> None:
        run_dir = out / method / f"seed{seed}"
        t0 = time.perf_counter()
        try:
            print(f"== bench: {method} seed {seed} ({cfg.train.max_iters} iterations): "
                  f"{run_state(run_dir, cfg)} ==", flush=True)
            state = run_one(method, seed, cfg, run_dir, isolate=isolate, threads=threads, fair_threads=fair_threads)
        finally:  # finished or failed, it holds no slot now (no widening once the bench stops: bench_child)
            if (method, seed) not in finished:
                with report_lock:
                    unfinished[0] -= 1
        if state != "done":
            print(f"   {method} seed {seed} finished in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        with report_lock:
            write_report(out)

    pool = ThreadPoolExecutor(jobs) if jobs > 1 else None  # each thread waits on its run's child process
    try:
        failed: list[BaseException] = []  # a refused or failed run: the others still train (Ctrl-C stops all)
        if pool is None:
            for item in plan:
                try:
                    bring_to_done(*item)
                except Exception as e:
                    failed.append(e)
        else:
            futures = [pool.submit(bring_to_done, *item) for item in plan]
            wait(futures)
            failed = [f.exception() for f in futures if f.exception() is not None]
        if len(failed) == 1:
            raise failed[0]
        if failed:
            raise RuntimeError("\n".join(map(str, failed)))
    except BaseException as exc:  # Ctrl-C, SIGTERM (the CLI turns it into SystemExit) or a failed run
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        stop_children(grace_s=60.0 if isinstance(exc, KeyboardInterrupt) else 0.0)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        _STOPPING.clear()  # every child has stopped: a later bench in this process may start runs
    return write_report(out)


def _check_bench_folder(out: str | Path) -> Path:
    """``out`` as a Path; refuses a file there (the bench folder holds one folder per method)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"bench: --out {out}: is a file; expected the bench folder (a new one or one a bench "
                         "wrote, with a folder per method)")
    return out


def parse_list(text: str, kind=str, option: str = "--methods") -> list:
    """A comma-separated command-line list (``--methods rein,lora``; ``--seeds 0,1,2`` with ``kind=int``: seeds
    are whole numbers 0 or more, written as the run folders ``seed<k>`` name them)."""
    from dgseg.bench_report import SEED_FOLDER

    items = [t.strip() for t in text.split(",")]
    expected = ("comma-separated seeds, whole numbers such as 0,1,2" if kind is int
                else "comma-separated names such as rein,frozen")
    for t in items:
        if not t:
            raise ValueError(f"bench: {option} '{text}': an empty item; expected {expected}")
        if kind is int and not SEED_FOLDER.fullmatch(f"seed{t}"):  # the run folder names the seed
            raise ValueError(f"bench: {option} '{text}': '{t}' is not a seed; expected {expected}")
    twice = sorted({t for t in items if items.count(t) > 1}, key=items.index)
    if twice:
        raise ValueError(f"bench: {option} '{text}': {', '.join(repr(t) for t in twice)} named twice; expected "
                         f"each {'seed' if kind is int else 'method'} once")
    return [kind(t) for t in items]
