"""Loading the user's model from a file or a module: ``path.py[:name]`` and ``package.module:name``.

One loader for the command line and for the workers of many fits: a file is imported once per
process under one module name derived from its resolved path, so the CLI and a worker in the same
process share the module (and the functions defined in it). Whatever stops a model file from
loading (a missing file, a syntax error, an exception raised while importing it, a missing name)
is a :class:`ModelFileError` whose message is one line naming the file, the line and the error.
Depends only on the standard library (and :mod:`resilient.resolve` to list candidate models).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from resilient.errors import ResilientError

__all__ = ["ModelFileError", "module_name", "load_module", "split_reference", "load_reference", "load_model"]


class ModelFileError(ResilientError):
    """A model file or reference cannot be loaded: a usage error (the CLI exits 2), not a model's
    numerical problem and not a bug of ours. ``path`` and ``line`` say where, when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


def module_name(path: str | Path) -> str:
    """The one module name a model file is imported under in this process."""
    resolved = str(Path(path).resolve())
    return f"resilient_user_model_{hashlib.sha1(resolved.encode()).hexdigest()[:12]}"


def _where() -> str:
    import os
    import socket

    return f"host {socket.gethostname()}, process {os.getpid()}, working directory {Path.cwd()}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _load_error(path: Path, error: BaseException) -> ModelFileError:
    """``m.py, line 3: SyntaxError: invalid syntax (def f(:)``: where in the user's file it stopped and why."""
    shown = str(path)
    kind = type(error).__name__
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename).resolve() == path.resolve():
        detail = f"{kind}: {error.msg}"
        if error.text and error.text.strip():
            detail += f" ({error.text.strip()})"
        return ModelFileError(f"model file {shown}, line {error.lineno}: {_one_line(detail)}. Fix the file and run "
                              "again.", path=shown, line=error.lineno)
    line = None
    for frame, number in traceback.walk_tb(error.__traceback__):
        if Path(frame.f_code.co_filename).resolve() == path.resolve():
            line = number
    if isinstance(error, SyntaxError):  # in a module the file imports: say where that one is
        origin = f" in {error.filename}, line {error.lineno}" if error.filename else ""
        detail = f"{kind}{origin}: {error.msg}"
    else:
        detail = f"{kind}: {error}"
    where = f", line {line}" if line is not None else ""
    fix = ("Install the missing module or correct the import" if isinstance(error, ImportError)
           else "Fix the file")
    return ModelFileError(f"model file {shown}{where}: {_one_line(detail)} (raised while importing the file). "
                          f"{fix} and run again.", path=shown, line=line)


#: module name -> the (mtime, size, digest) of the model file it was imported from
_IMPORTED: dict[str, tuple] = {}


def file_stamp(path: str | Path) -> tuple:
    """What says a model file changed: its modification time, size and the digest of its bytes."""
    file = Path(path)
    stat = file.stat()
    return stat.st_mtime_ns, stat.st_size, hashlib.sha1(file.read_bytes()).hexdigest()


def load_module(path: str | Path) -> types.ModuleType:
    """The module of a model file, imported under :func:`module_name` once per process and again when the file
    changed since (a model file edited between two calls in one session: its new model, not the old one).

    Raises :class:`ModelFileError` when the file does not exist or does not import."""
    file = Path(path)
    if not file.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist ({_where()}). Give MODEL.py or "
                             "MODEL.py:NAME; workers of many fits load the file by its path, so it must be where "
                             "every worker can read it.", path=str(path))
    name = module_name(file)
    module = sys.modules.get(name)
    stamp = file_stamp(file)
    if module is not None and _IMPORTED.get(name) == stamp:
        return module
    _IMPORTED.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(file.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(name, None)
        raise _load_error(file, error) from error
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(folder)
    _IMPORTED[name] = stamp
    return module


def split_reference(reference: str) -> tuple[str, str]:
    """``"file.py:name"`` or ``"package.module:name"`` -> (path or module, name)."""
    path, sep, name = reference.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ModelFileError(f"A model reference must be 'file.py:name' or 'package.module:name', got {reference!r}.")
    return path, name


_LOADED: dict[str, Any] = {}


def load_reference(reference: str) -> Any:
    """The object a ``"file.py:name"`` or ``"package.module:name"`` reference names (loaded once per process; a
    file again when it changed, :func:`load_module`)."""
    path, name = split_reference(reference)
    if reference in _LOADED and not (path.endswith(".py") and Path(path).is_file()
                                     and _IMPORTED.get(module_name(path)) != file_stamp(path)):
        return _LOADED[reference]
    if path.endswith(".py"):
        module = load_module(path)
    else:
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as error:
            if error.name and (path == error.name or path.startswith(error.name + ".")):
                raise ModelFileError(f"model module {path!r} cannot be found ({_where()}): {error}. Give "
                                     "'file.py:name' or an importable 'package.module:name'.") from error
            raise ModelFileError(f"model module {path} raised {_one_line(f'{type(error).__name__}: {error}')} "
                                 "while being imported.") from error
        except (Exception, SystemExit) as error:
            raise ModelFileError(f"model module {path} raised {_one_line(f'{type(error).__name__}: {error}')} "
                                 "while being imported.") from error
    if not hasattr(module, name):
        raise ModelFileError(f"{path} defines no {name!r}.", path=path)
    _LOADED[reference] = getattr(module, name)
    return _LOADED[reference]


def candidates(module: types.ModuleType) -> list[str]:
    """Names in a model file that could be the model: pm.Models and the functions the file defines."""
    from resilient.resolve import is_pymc_model

    names = []
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if is_pymc_model(value):
            names.append(key)
        elif isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            names.append(key)
    return names


def load_model(spec: str) -> tuple[Any, dict]:
    """``path.py[:name]`` -> the model object and the module's ``data`` dict (if any). Without a name:
    the file's ``model``, or its one candidate."""
    path_text, _, name = spec.partition(":")
    if name and not name.isidentifier():
        raise ModelFileError(f"{spec!r} must be MODEL.py or MODEL.py:NAME with NAME a Python name.")
    module = load_module(path_text)
    data = getattr(module, "data", None)
    data = dict(data) if isinstance(data, dict) else {}
    found = candidates(module)
    if name:
        if not hasattr(module, name):
            raise ModelFileError(f"{path_text} defines no {name!r}. It defines: {', '.join(found) or 'nothing usable'}.",
                                 path=path_text)
        return getattr(module, name), data
    if "model" in found:
        return getattr(module, "model"), data
    if len(found) == 1:
        return getattr(module, found[0]), data
    raise ModelFileError(f"{path_text} defines {len(found)} candidate models ({', '.join(found) or 'none'}); "
                         f"pick one with {path_text}:NAME.", path=path_text)
