"""Reading the pickle of a PyTorch zip archive without running anything it names.

A ``torch.save`` file and a TorchScript archive (``torch.jit.save``, e.g. OpenAI's CLIP ``.pt``) are zip
files: ``<top>/data.pkl`` (a pickle) plus ``<top>/data/<key>`` records (raw tensor bytes). Loading
them with ``torch.jit.load`` or an unrestricted ``pickle`` runs code from the file (a scripted
``__setstate__`` can call ``torch.save`` to any path). :func:`read_archive` unpickles ``data.pkl``
with an unpickler that

- rebuilds tensors from the ``data/`` records itself (``_rebuild_tensor_v2`` / ``_rebuild_parameter``
  and ``torch.<Type>Storage`` markers only; bounds are checked by ``torch.as_strided``),
- builds plain containers (``collections.OrderedDict`` and the pickle built-ins),
- turns instances of classes from the ``inert`` module roots (``__torch__`` for TorchScript) into
  :class:`InertObject` holders that only record their class name, arguments and state,
- refuses every other global, with an :class:`UnsafePickleError` naming the file and the global.

``extra_globals`` lets a caller allow more *pure* constructors for its own format. A training checkpoint
with logging objects (mmengine's ``HistoryBuffer``, numpy scalars in its message hub) reads with
``inert=("mmengine", "numpy")``: those become holders, the tensors stay tensors. :func:`torchscript_state_dict` walks a TorchScript module tree into the state dict
``torch.jit.load(path).state_dict()`` would give, without loading it.
"""

from __future__ import annotations

import ast
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["UnsafePickleError", "InertObject", "read_archive", "torchscript_state_dict", "is_torchscript"]


class UnsafePickleError(ValueError):
    """An archive names something dgseg will not construct, or is malformed; the message names the file."""


class InertObject:
    """Stands for an instance of a class from the archive (never imported, never run).

    ``qualname`` is the class's dotted name, ``args`` what it was called with, ``state`` what
    pickle's BUILD gave it (a dict of attributes for TorchScript modules without custom state).
    """

    qualname = "?"

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject({self.qualname})"


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: Iterable[int], stride: Iterable[int],
                    requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> Tensor:
    if not isinstance(storage, Tensor):
        raise TypeError(f"tensor storage is a {type(storage).__name__}, expected a data/ record")
    return torch.as_strided(storage, tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset))


def _rebuild_parameter(data: Tensor, requires_grad: bool = False, backward_hooks: Any = None,
                       *_: Any) -> Tensor:
    if not isinstance(data, Tensor):
        raise TypeError(f"parameter data is a {type(data).__name__}, expected a tensor")
    return data


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles write bytes as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TypeError(f"_codecs.encode({type(text).__name__}, {encoding!r}): only latin1 text is rebuilt")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # TorchScript's typed containers (torch/jit/_pickle.py): identity functions on plain lists/dicts
    ("torch.jit._pickle", "build_intlist"): list,
    ("torch.jit._pickle", "build_doublelist"): list,
    ("torch.jit._pickle", "build_boollist"): list,
    ("torch.jit._pickle", "build_tensorlist"): list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _in_roots(module: str, roots: Iterable[str]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, top: str, path: Path, inert: tuple[str, ...],
                 extra: Mapping[tuple[str, str], Any]) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._zip, self._top, self._path = archive, top, path
        self._inert, self._extra = inert, extra
        self._classes: dict[str, type] = {}
        self._storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._extra:
            return self._extra[module, name]
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[module, name]
        if _in_roots(module, self._inert):
            qual = f"{module}.{name}"
            if qual not in self._classes:
                self._classes[qual] = type(re.sub(r"\W", "_", name) or "Inert", (InertObject,), {"qualname": qual})
            return self._classes[qual]
        raise UnsafePickleError(
            f"{self._path}: its pickle names '{module}.{name}', which dgseg does not construct (only tensors, "
            "plain containers" + (f" and inert {'/'.join(self._inert)} objects" if self._inert else "")
            + "); nothing from the file was run. Convert the file to safetensors with the tool that made it."
        )

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self._path}: unexpected persistent id {pid!r} (expected a tensor storage)")
        _, kind, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            record = f"{self._top}/data/{key}"
            try:
                raw = bytearray(self._zip.read(record))
            except KeyError:
                raise UnsafePickleError(f"{self._path}: tensor record {record} is missing") from None
            size = torch.empty((), dtype=kind.dtype).element_size()
            if len(raw) != int(numel) * size:
                raise UnsafePickleError(f"{self._path}: tensor record {record} holds {len(raw)} bytes, expected "
                                        f"{int(numel)} x {size} (truncated?)")
            self._storages[key] = torch.frombuffer(raw, dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
        storage = self._storages[key]
        if storage.dtype != kind.dtype:
            storage = storage.view(torch.uint8).view(kind.dtype)
        return storage


def _top_folder(archive: zipfile.ZipFile, path: Path) -> str:
    tops = [n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(tops) != 1:
        raise UnsafePickleError(f"{path}: not a PyTorch zip archive (expected one '<folder>/data.pkl' record)")
    return tops[0]


def read_archive(path: str | Path, inert: Iterable[str] = (),
                 extra_globals: Mapping[tuple[str, str], Callable[..., Any]] | None = None) -> Any:
    """The object pickled in a PyTorch zip archive's ``data.pkl``, built without running file code.

    Args:
        path: a ``torch.save`` (zip format) or ``torch.jit.save`` file.
        inert: module roots (``"__torch__"``, ``"mmengine"``) whose classes become :class:`InertObject`.
        extra_globals: ``(module, name) -> callable`` the caller vouches for (pure constructors only).

    Raises UnsafePickleError naming the file for any other global, a malformed archive or record.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnsafePickleError(f"{path}: not a readable zip archive ({exc})") from exc
    with archive:
        top = _top_folder(archive, path)
        if f"{top}/byteorder" in archive.namelist() and archive.read(f"{top}/byteorder").strip() != b"little":
            raise UnsafePickleError(f"{path}: big-endian archives are not supported")
        unpickler = _Unpickler(archive.read(f"{top}/data.pkl"), archive, top, path, tuple(inert),
                               dict(extra_globals or {}))
        try:
            return unpickler.load()
        except UnsafePickleError:
            raise
        except Exception as exc:
            raise UnsafePickleError(f"{path}: malformed data.pkl ({type(exc).__name__}: {exc})") from exc


def is_torchscript(path: str | Path) -> bool:
    """True for a zip archive written by ``torch.jit.save`` (it has ``constants.pkl`` or ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


_CLASS = re.compile(r"^class (\w+)\(Module\):\s*$")
_DECL = re.compile(r"^\s+__(parameters|buffers)__ = (\[.*\])\s*$")


def _module_declarations(path: Path) -> dict[str, set[str]]:
    """``{class qualname: parameter and buffer names}`` from the archive's ``code/`` text (read, not run)."""
    found: dict[str, set[str]] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) < 3 or parts[1] != "code" or not name.endswith(".py"):
                continue
            module = ".".join(parts[2:])[: -len(".py")]
            current = None
            for line in zf.read(name).decode("utf-8", "replace").splitlines():
                if m := _CLASS.match(line):
                    current = found.setdefault(f"{module}.{m.group(1)}", set())
                elif current is not None and (m := _DECL.match(line)):
                    try:
                        current.update(str(v) for v in ast.literal_eval(m.group(2)))
                    except (ValueError, SyntaxError):
                        pass
    return found


def torchscript_state_dict(path: str | Path) -> dict[str, Tensor]:
    """``torch.jit.load(path).state_dict()`` without loading: parameters and buffers of every module.

    Module objects are read as :class:`InertObject`; one whose state is not a plain attribute dict (a
    class with its own ``__getstate__``/``__setstate__``, which TorchScript would run) is refused.
    """
    path = Path(path)
    root = read_archive(path, inert=("__torch__",))
    declared = _module_declarations(path)
    out: dict[str, Tensor] = {}

    def walk(obj: InertObject, prefix: str) -> None:
        if not isinstance(obj.state, dict):
            raise UnsafePickleError(
                f"{path}: the TorchScript class {obj.qualname} (at '{prefix.rstrip('.') or 'the top'}') keeps its "
                "own state (__getstate__/__setstate__), which only running the archive's code would restore; "
                "dgseg runs no code from a weights file. Save the weights with safetensors instead."
            )
        names = declared.get(obj.qualname)
        for key, value in obj.state.items():
            if isinstance(value, Tensor) and (names is None or key in names):
                out[prefix + str(key)] = value
            elif isinstance(value, InertObject):
                walk(value, f"{prefix}{key}.")

    if not isinstance(root, InertObject):
        raise UnsafePickleError(f"{path}: a TorchScript archive whose data.pkl is a {type(root).__name__}, "
                                "expected a scripted module")
    walk(root, "")
    return out
