"""The report page: HTML from the standard library's ``string.Template`` and ``html.escape``, pictures
as PNG/JPEG files in ``<out>/report_assets/``; no JavaScript, no network: it opens from disk and prints."""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from string import Template

from dgseg.atomic import own_folder, write_atomic
from dgseg.report import figures
from dgseg.report.runs import RunRecord, load_run, unique_names

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; } th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; } td.best { font-weight: bold; background: #e3f4e1; }
img { max-width: 100%; height: auto; } figure { margin: .6em 0; } figcaption { font-size: 12px; color: #555; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .row figure { max-width: 48%; }
.note { color: #666; font-size: 12px; } code { font-size: 12px; }
@media print { body { max-width: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head>
<body>
<h1>$title</h1>
<p class="note">$subtitle</p>
$sections
</body></html>
""")


def _e(text) -> str:
    return html.escape(str(text))


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _img(path: Path | None, out: Path, alt: str) -> str:
    if path is None:
        return ""
    return f'<figure><img src="{_e(path.relative_to(out).as_posix())}" alt="{_e(alt)}"><figcaption>{_e(alt)}</figcaption></figure>'


def domain_table(runs: list[RunRecord], domains: list[str], source: str | None) -> str:
    """Rows: runs; columns: domains, mean over targets, rPD (higher is better), trainable parameters and
    training time (lower is better). The best value of each column is marked."""
    cols = [(d, True) for d in domains] + [("mean targets", True), ("rPD", True), ("trainable params", False),
                                          ("train time", False)]

    def value(run: RunRecord, col: str):
        if col == "mean targets":
            return run.mean_targets()
        if col == "rPD":
            return run.rpd()
        if col == "trainable params":
            return run.trainable()
        if col == "train time":
            return run.train_time_s()
        return run.domains.get(col, {}).get("mIoU")

    best = {}
    for col, higher in cols:
        vals = [v for r in runs if (v := value(r, col)) is not None and not (isinstance(v, float) and math.isnan(v))]
        if len(vals) > 1:
            best[col] = max(vals) if higher else min(vals)
    head = "".join(f"<th>{_e(c)}{' (source)' if c == source else ''}</th>" for c, _ in cols)
    body = []
    for run in runs:
        cells = []
        for col, _ in cols:
            v = value(run, col)
            text = (f"{v:,}" if col == "trainable params" and v is not None else
                    f"{v / 60:.1f} min" if col == "train time" and v is not None else _fmt(v))
            mark = ' class="best"' if col in best and v == best[col] else ""
            cells.append(f"<td{mark}>{_e(text)}</td>")
        mark = "" if run.evaluated.get("final", True) else \
            f'<br><span class="note">eval.json: {_e(evaluated_text(run.evaluated, short=True))}</span>'
        body.append(f'<tr data-run="{_e(run.name)}"><td>{_e(run.name)}{mark}</td>{"".join(cells)}</tr>')
    return (f'<table id="domains"><thead><tr><th>run</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="note">mIoU in %; mean over the target domains (all but the source); rPD = 100 x mean '
            'targets / source mIoU. Bold: best in the column (lowest for parameters and time).</p>')


def evaluated_text(record: dict, short: bool = False) -> str | None:
    """Which checkpoint a run's eval.json comes from: its file and iteration, whether it is the run's final
    weights and (unless ``short``) the overrides and changed config keys; None for an eval.json without it."""
    if not record:
        return None
    from dgseg.engine.eval_record import iteration_text

    text = iteration_text(record)
    if short:
        return text
    text = f"{Path(str(record.get('file'))).name}, {text}"
    if record.get("overrides"):
        text += "; --set " + ", ".join(map(str, record["overrides"]))
    if record.get("changed"):
        text += "; differs from the run's config in " + ", ".join(map(str, record["changed"]))
    return text


def _flatten(d, prefix: str = "") -> dict[str, str]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = repr(d)
    return out


def facts_table(runs: list[RunRecord]) -> str:
    keys = [("machine", lambda f: f.get("machine")), ("precision", lambda f: f.get("precision")),
            ("versions", lambda f: ", ".join(f"{k} {v}" for k, v in (f.get("versions") or {}).items()) or None),
            ("git revision", lambda f: f.get("git_revision")), ("started", lambda f: f.get("started")),
            ("finished", lambda f: f.get("finished"))]
    head = "".join(f"<th>{_e(k)}</th>" for k, _ in keys) + "<th>eval.json from</th>"
    rows = "".join(f"<tr><td>{_e(r.name)}</td>" + "".join(f"<td>{_e(get(r.facts) or '-')}</td>" for _, get in keys)
                   + f"<td>{_e(evaluated_text(r.evaluated) or '-')}</td></tr>" for r in runs)
    return f"<table><thead><tr><th>run</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def config_diff(runs: list[RunRecord]) -> str:
    flat = [_flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if k != "name"})
    differ = [k for k in keys if len({f.get(k, "(absent)") for f in flat}) > 1]
    if len(runs) < 2:
        return "<p>One run: nothing to compare.</p>"
    if not differ:
        return "<p>The runs' configs are identical (apart from their names).</p>"
    head = "".join(f"<th>{_e(r.name)}</th>" for r in runs)
    rows = "".join(f"<tr><td><code>{_e(k)}</code></td>" + "".join(f"<td>{_e(f.get(k, '(absent)'))}</td>" for f in flat)
                   + "</tr>" for k in differ)
    return f"<table><thead><tr><th>key</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def write_report(run_dirs: list[str | Path], out: str | Path, baseline: str | None = None,
                 confusion_domain: str | None = None, scenes: int = 3, title: str = "dgseg comparison") -> Path:
    """Write ``out/report.html`` (+ ``out/report_assets/``) comparing the run folders; returns the page."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("report: give at least one run folder")
    if scenes < 0:
        raise ValueError(f"report: --scenes {scenes}: expected the prediction scenes per domain, 0 or more")
    runs = [load_run(p, n) for p, n in zip(paths, unique_names(paths))]
    resolved = [p.resolve() for p in paths]
    twice = [str(p) for i, p in enumerate(paths) if resolved[i] in resolved[:i]]
    if twice:
        raise ValueError(f"report: {', '.join(twice)}: the same run folder given twice; expected each run once")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report: --out {out}: is a file; expected a folder for report.html and report_assets/")
    base = None
    if baseline is not None:
        base = next((r for r in runs if baseline == r.name or Path(baseline).resolve() == Path(r.path).resolve()), None)
        if base is None:
            raise ValueError(f"report: --baseline {baseline!r} is none of the runs ({', '.join(r.name for r in runs)})")
    source = next((r.source for r in runs if r.source), None)
    domains = list(dict.fromkeys(d for r in runs for d in ([source] if source in r.domains else []) + r.targets))
    if confusion_domain is not None and confusion_domain not in domains:  # before anything is drawn or made
        raise ValueError(f"report: --domain {confusion_domain!r} is not an evaluated domain ({', '.join(domains)})")
    assets = own_folder(out / "report_assets", "the report's pictures")  # a link there is refused, not followed
    shown: set[str] = set()  # the pictures the page shows: every other picture of ours in assets is pruned

    def show(path: Path | None, alt: str) -> str:
        if path is not None:
            shown.add(path.name)
        return _img(path, out, alt)

    sections = []
    if domains:
        sections.append("<h2>mIoU per domain</h2>" + domain_table(runs, domains, source)
                        + show(figures.bars(runs, domains, assets / "bars.png"), "mIoU per domain and run"))
        with_iou = [r for r in runs if any(v.get("IoU") for v in r.domains.values())]
        if with_iou and (base is None or len(with_iou) > 1):
            what = f"difference to {base.name}" if base is not None else "per run"
            sections.append("<h2>Per-class IoU</h2>" + show(figures.heatmaps(with_iou, domains, assets / "classes.png",
                                                                             base), f"IoU per class and domain, {what}"))
        cdom = confusion_domain or next((d for d in domains if d != source), domains[0])
        conf = [figures.confusion(r, cdom, assets / f"confusion_{i}.png") for i, r in enumerate(runs)]
        if any(conf):
            sections.append(f"<h2>Confusion matrix: {_e(cdom)}</h2><div class=\"row\">" + "".join(
                show(p, f"{r.name}, rows normalised") for p, r in zip(conf, runs) if p is not None) + "</div>")
    grid = []
    for j, domain in enumerate(domains):
        for i in range(scenes):
            row = figures.prediction_row(runs, domain, i, assets / f"scene_{j}_{i}.jpg")
            if row is not None:
                grid.append(show(row, f"{domain}, scene {i}: image | ground truth | "
                                 + " | ".join(r.name for r in runs)))
    if grid:
        sets: dict[tuple, list[RunRecord]] = {}  # one legend per class set (names and colours) among the runs
        for r in runs:
            sets.setdefault((tuple(r.classes), r.palette.tobytes()), []).append(r)
        legends = [show(figures.legend(rs[0].classes, rs[0].palette, assets / f"legend_{i}.png"),
                        "classes" if len(sets) == 1 else "classes of " + ", ".join(r.name for r in rs))
                   for i, rs in enumerate(sets.values())]
        sections.append("<h2>Predictions</h2>" + "".join(legends) + "".join(grid))
    if any(r.log for r in runs):
        sections.append("<h2>Training curves</h2>" + show(figures.curves(runs, assets / "curves.png"),
                                                           "loss, learning rate and validation mIoU"))
    sections.append("<h2>Run facts</h2>" + facts_table(runs) + "<h3>Config keys that differ</h3>" + config_diff(runs))
    missing = [r.name for r in runs if not r.domains]
    if missing:
        sections.insert(0, f'<p class="note">No eval.json in: {_e(", ".join(missing))} (evaluate with '
                        '<code>dgseg eval</code> to add their tables).</p>')
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = PAGE.substitute(title=_e(title), css=CSS, sections="\n".join(sections),
                           subtitle=_e(f"{len(runs)} runs: " + ", ".join(f"{r.name} ({r.path})" for r in runs)
                                       + f". Written {now}."))
    written = write_atomic(out / "report.html", page)
    prune_assets(assets, shown)
    return written


ASSET_NAMES = re.compile(r"(bars|classes|curves)\.png|(confusion|legend)_\d+\.png|scene_\d+_\d+\.jpg")
"""The names :func:`write_report` gives the pictures in ``report_assets/``."""


def prune_assets(assets: Path, shown: set[str]) -> None:
    """Removes from ``assets`` the pictures of earlier reports: files with the names :func:`write_report` gives
    (:data:`ASSET_NAMES`) that the page just written does not show (``shown``: the names of the pictures it
    drew). Other files and symbolic links are kept. Call it after the page is written."""
    for f in assets.iterdir():
        if ASSET_NAMES.fullmatch(f.name) and not f.is_symlink() and f.is_file() and f.name not in shown:
            f.unlink()
