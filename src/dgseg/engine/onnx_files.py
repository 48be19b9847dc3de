"""An ONNX export put at its name whole: the graph with the class metadata, and the weights beside it in
one ``<name>.data`` file when they do not fit in the graph's 2 GB protobuf.

The exporter writes into a private temp folder beside the output (``torch.onnx.export`` writes a model over
2 GB as one file per weight tensor, named after the tensor, in the folder of the file it is given: never the
user's folder, where those names could replace files). The graph is read back, given the class metadata
(:func:`dgseg.engine.classes_meta.set_onnx_class_metadata`) and saved again in the temp folder: its weights
inside it, or, when the exporter put them outside, in one ``<name>.data`` file the graph names by that relative
location (onnx's external-data format; onnxruntime reads it from the graph's folder). The caller's check
(onnxruntime against PyTorch) runs on those finished files there; then the data file and the graph are each
published (:func:`dgseg.atomic.publish`, data first) and the temp folder is removed. A temp folder that a
killed export left is removed by the next export to the same name, when that is safe
(:mod:`dgseg.engine.export_temps`), and named otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from dgseg.atomic import file_mode, publish
from dgseg.config import Config
from dgseg.engine.classes_meta import set_onnx_class_metadata
from dgseg.engine.export_temps import clear_leftovers, hold

__all__ = ["write_onnx", "data_file_of"]


def data_file_of(onnx_file: str | Path) -> Path:
    """Where the weights of an export over 2 GB go: ``<name>.data`` beside ``<name>``."""
    onnx_file = Path(onnx_file)
    return onnx_file.with_name(f"{onnx_file.name}.data")


def write_onnx(export: Callable[[Path], object], out_file: str | Path, cfg: Config, replace: bool = True,
               check: Callable[[Path], object] | None = None) -> Path:
    """Runs ``export(path)`` (which writes an ONNX file at ``path``, in a private temp folder), then puts the
    graph at ``out_file`` with the class metadata of ``cfg`` and, when the exporter wrote the weights outside
    the graph, the weights at :func:`data_file_of`. ``check(path)``, when given, runs on the finished graph in
    the temp folder (its data file beside it) before anything is published; an error from it propagates.
    ``replace=False``: an output file that exists is kept and refused (:class:`dgseg.atomic.OutputExistsError`).
    Nothing is left at the outputs on error."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    out_file = Path(out_file)
    removed, kept = clear_leftovers(out_file)
    if removed:
        print(f"export: removed {len(removed)} temp folder(s) that an earlier export of {out_file} left when it "
              f"was stopped: {', '.join(p.name for p in removed)}", file=sys.stderr)
    if kept:
        print(f"export: kept {len(kept)} temp folder(s) of another export of {out_file} beside it: "
              f"{', '.join(p.name for p in kept)} (running now, or dgseg cannot tell that it is not: an older "
              "dgseg's, another machine's); remove them when no export to that name runs", file=sys.stderr)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_file.parent, prefix=f".{out_file.name}.", suffix=".tmp"))
    held = hold(work)  # while the export runs, the next one to this name leaves this folder alone
    published: list[Path] = []
    try:
        raw = work / "export" / "model.onnx"
        raw.parent.mkdir()
        export(raw)
        model = onnx.load(str(raw), load_external_data=False)
        external = any(uses_external_data(t) for t in model.graph.initializer)
        set_onnx_class_metadata(model, cfg)
        final = work / "final" / out_file.name  # a folder of its own: no name of the user's meets export/, the lock
        final.parent.mkdir()
        if external:
            load_external_data_for_model(model, str(raw.parent))
            onnx.save_model(model, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_file_of(out_file).name, size_threshold=1024)
        else:
            onnx.save_model(model, str(final))
        if check is not None:
            check(final)
        if external:
            data = data_file_of(final)
            os.chmod(data, file_mode())  # onnx creates it 0600: the umask's, as the graph and every file dgseg writes
            publish(data, data_file_of(out_file), replace)
            published.append(data_file_of(out_file))
        publish(final, out_file, replace)
        return out_file
    except BaseException:
        for path in published:  # the data file of a graph that did not land: it was created by this call
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if held is not None:
            os.close(held)
