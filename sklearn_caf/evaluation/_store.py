"""The run folder: its manifest, verified part files, resuming and :func:`load_report`.

Each finished chunk is a Parquet part ``part-NNNNNN.parquet`` and a checksum file
``part-NNNNNN.parquet.sha256`` (JSON: the run's identity, the chunk, its row count and the
SHA-256 of the part's bytes). The part's own key-value metadata records the same identity.
Reading a folder verifies every part against its checksum file, its name and the run's
plan; a part that fails is never read into a report (see :func:`_verified_parts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import caller_stacklevel, import_optional
from ._config import _FORMAT_VERSION, _differences, upgrade_manifest
from ._report import FAITHFULNESS_SUMMARY, LocalizationReport, _report

_MANIFEST = "manifest.json"


_PART_PREFIX = "part-"
_PART_NAME = re.compile(r"part-(\d{6,})\.parquet")
_CHECKSUM_SUFFIX = ".sha256"
#: Where parts that fail verification are moved on resume.
_REJECTED = "rejected"
#: The key of a part's Parquet key-value metadata holding its identity.
_PART_KEY = b"sklearn_caf.part"


def _parquet():
    needed_by = "evaluation part files (Parquet)"
    return (
        import_optional("pyarrow", needed_by=needed_by),
        import_optional("pyarrow.parquet", needed_by=needed_by),
    )


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _write_atomically(path: Path, write) -> None:
    """Write with ``write(tmp)`` under a temporary name in the same folder, then rename."""
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _part_path(out: Path, chunk: int) -> Path:
    return out / f"{_PART_PREFIX}{chunk:06d}.parquet"


def _checksum_path(part: Path) -> Path:
    return part.with_name(part.name + _CHECKSUM_SUFFIX)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_identity(config: dict) -> str:
    """The SHA-256 of a run's configuration (its manifest), keys sorted: what each part
    records so that a part of another run is recognized."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _write_part(out: Path, chunk: int, table: Any, run_id: str) -> None:
    """Write one chunk's part and its checksum file.

    The part is written under a temporary name, its checksum file is written (atomically)
    next, and only then is the part renamed into place: a part under its final name always
    has its checksum file.
    """
    _, pq = _parquet()
    record = {"format": _FORMAT_VERSION, "run": run_id, "chunk": int(chunk)}
    record["n_rows"] = int(table.num_rows)
    table = table.replace_schema_metadata({_PART_KEY: json.dumps(record).encode()})
    path = _part_path(out, chunk)
    tmp = _tmp_name(path)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        record["sha256"] = _sha256(tmp)
        text = json.dumps(record, indent=2) + "\n"
        _write_atomically(_checksum_path(path), lambda t: t.write_text(text))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _part_files(out: Path) -> list[Path]:
    return sorted(out.glob(f"{_PART_PREFIX}*.parquet"))


def _part_problem(path: Path, run_id: str, n_chunks: int) -> tuple[int | None, str | None]:
    """``(chunk, None)`` for a part that passes every check, else ``(chunk, reason)``."""
    _, pq = _parquet()
    match = _PART_NAME.fullmatch(path.name)
    if match is None or _part_path(path.parent, int(match.group(1))).name != path.name:
        return None, "its name is not a chunk's (part-NNNNNN.parquet, six digits at least)"
    chunk = int(match.group(1))
    if chunk >= n_chunks:
        return chunk, (
            f"chunk {chunk} is outside this run's plan ({n_chunks} chunks, 0 to {n_chunks - 1})"
        )
    checksum = _checksum_path(path)
    try:
        record = json.loads(checksum.read_text())
        expected = {k: record[k] for k in ("run", "chunk", "n_rows", "sha256")}
    except FileNotFoundError:
        return chunk, f"it has no checksum file ({checksum.name})"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return chunk, f"its checksum file {checksum.name} cannot be read ({exc})"
    if _sha256(path) != expected["sha256"]:
        return chunk, "its bytes do not match its checksum (corrupt or modified)"
    if expected["chunk"] != chunk:
        return chunk, f"it is a copy of chunk {expected['chunk']}'s part, not chunk {chunk}'s"
    if expected["run"] != run_id:
        return chunk, "it belongs to another run (another configuration)"
    try:
        meta = pq.read_schema(path).metadata or {}
        own = json.loads(meta[_PART_KEY])
        rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # any failure to read means "not readable"
        return chunk, f"it cannot be read as a part ({type(exc).__name__}: {exc})"
    if (own.get("run"), own.get("chunk"), own.get("n_rows"), rows) != (
        run_id,
        chunk,
        expected["n_rows"],
        expected["n_rows"],
    ):
        return chunk, "its own metadata does not match its name and checksum file"
    return chunk, None


def _verified_parts(
    out: Path, config: dict
) -> tuple[dict[int, Path], list[tuple[Path, int | None, str]]]:
    """The parts of the planned chunks that pass verification, and the others with why.

    A part passes when its name is ``part-NNNNNN.parquet`` for a chunk of the plan
    (``0 <= chunk < n_chunks``), its checksum file exists, the part's SHA-256 matches it,
    and the checksum file and the part's own metadata both name this chunk and this run
    (:func:`run_identity` of the manifest). Each chunk then has at most one part.
    """
    run_id = run_identity(config)
    good: dict[int, Path] = {}
    bad: list[tuple[Path, int | None, str]] = []
    for path in _part_files(out):
        chunk, problem = _part_problem(path, run_id, int(config["n_chunks"]))
        if problem is None:
            good[chunk] = path
        else:
            bad.append((path, chunk, problem))
    return dict(sorted(good.items())), bad


def _set_aside(out: Path, bad: list, good: dict, n_chunks: int) -> None:
    """Move the parts that failed verification (and their checksum files) to
    ``out/rejected/``, with a warning naming each."""
    if not bad:
        return
    folder = out / _REJECTED
    folder.mkdir(exist_ok=True)
    for path, chunk, problem in bad:
        dest = folder / path.name
        n = 1
        while dest.exists():
            dest, n = folder / f"{path.name}.{n}", n + 1
        os.replace(path, dest)
        checksum = _checksum_path(path)
        if checksum.exists():
            os.replace(checksum, _checksum_path(dest))
        again = (
            f"; chunk {chunk} is computed again"
            if chunk is not None and chunk < n_chunks and chunk not in good
            else ""
        )
        warnings.warn(
            f"{path} is not a valid part of this run: {problem}. It was moved to {dest}{again}.",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )


try:  # POSIX; elsewhere runs are not locked (documented)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_LOCK = ".lock"


def _out_dir(out: Any) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a directory.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Probe: a folder made read-only (or a full disk) must fail before any image is
        # computed, not after the first chunk.
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"out={str(out)!r} is not a writable directory ({exc.strerror or exc}); give a "
            "directory this process can create files in."
        ) from None
    return out


@contextlib.contextmanager
def _run_lock(out: Any):
    """Hold an exclusive OS lock (``fcntl.flock``) on ``out/.lock`` for a run's duration.

    A second run into the same folder is refused with the holder's PID and host. The
    kernel releases the lock when its process ends, however it ends: the lock of a killed
    run is stale at once and the next run takes it. The file descriptor is not inherited
    by worker processes.
    """
    out = _out_dir(out)
    if fcntl is None:  # pragma: no cover - Windows
        yield out
        return
    path = out / _LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text())
                who = f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
            except (OSError, ValueError, KeyError, TypeError):
                who = "a process that has not yet written its PID"
            raise ValueError(
                f"out={str(out)!r} is in use by another run ({who}; lock file {path}). Wait "
                "for it to finish, stop it, or give another out directory."
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield out
    finally:
        os.close(fd)  # releases the lock


def _read_manifest(out: Path) -> dict:
    manifest = out / _MANIFEST
    try:
        config = json.loads(manifest.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest} cannot be read as a run manifest: {exc}") from None
    version = config.get("format")
    if version != _FORMAT_VERSION:
        raise ValueError(
            f"{manifest} is a run folder of format {version!r}, written by another version of "
            f"sklearn-caf; this one reads format {_FORMAT_VERSION} only (format 2 added the "
            "parts' checksums and the run's identity, 3 the boxes in the images' own pixels). "
            "Start the "
            "run again in a new directory (or empty this one), or read the old parts as they "
            "are with pandas.read_parquet at your own risk."
        )
    return upgrade_manifest(config)


def _prepare_out(out: Any, config: dict) -> tuple[Path, dict[int, Path]]:
    """The run folder, created or checked against ``config``, and its verified parts
    (those that fail verification are set aside). Call it holding :func:`_run_lock`."""
    out = _out_dir(out)
    manifest = out / _MANIFEST
    normalized = json.loads(json.dumps(config))
    if manifest.exists():
        old = _read_manifest(out)
        diff = _differences(old, normalized)
        if diff:
            shown = ", ".join(diff[:6]) + (", ..." if len(diff) > 6 else "")
            raise ValueError(
                f"out={str(out)!r} holds a run with a different configuration (differs in: "
                f"{shown}); resume it with the same explainers, dataset and settings, or give "
                "another out directory."
            )
    else:
        if _part_files(out):
            raise ValueError(
                f"out={str(out)!r} holds part files but no {_MANIFEST}; it is not a run this "
                "function can resume. Give an empty or new directory."
            )
        _write_atomically(
            manifest, lambda tmp: tmp.write_text(json.dumps(normalized, indent=2) + "\n")
        )
    # Temporary files of a run killed while writing: never read, safe to remove.
    for stale in out.glob(f".{_PART_PREFIX}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    good, bad = _verified_parts(out, normalized)
    _set_aside(out, bad, good, int(normalized["n_chunks"]))
    return out, good


def _arrow_columns(pa, columns: dict) -> dict:
    out = {}
    for key, values in columns.items():
        if key in ("iou_curve_v1", "iou_curve_v2"):
            out[key] = pa.array(
                [np.asarray(v, dtype=np.float64) for v in values], type=pa.list_(pa.float64())
            )
        elif key in ("deletion_curve", "insertion_curve"):
            out[key] = pa.array(
                [None if v is None else np.asarray(v, dtype=np.float64) for v in values],
                type=pa.list_(pa.float64()),
            )
        elif key in FAITHFULNESS_SUMMARY:
            out[key] = pa.array(values, type=pa.float64())
        elif key == "embedding":
            out[key] = pa.array(values, type=pa.list_(pa.float32()))
        elif key == "true_boxes":
            out[key] = pa.array(
                [np.asarray(v, dtype=np.float64).reshape(-1, 4).tolist() for v in values],
                type=pa.list_(pa.list_(pa.float64(), 4)),
            )
        elif key in ("pred_top5", "pxap_true_hist", "pxap_false_hist"):
            out[key] = pa.array(values, type=pa.list_(pa.int64()))
        else:
            out[key] = pa.array(values)
    return out


def load_report(out: str | os.PathLike) -> LocalizationReport:
    """Read the report of a run written by :func:`evaluate_localization` with ``out``.

    A run still going, or killed, gives a partial report: the chunks finished so far
    (``report.complete`` is False). Every part is verified first (its checksum file, its
    name, the chunk and run it records); one that fails is not read, with a warning.

    Parameters
    ----------
    out : str or path
        The run's directory.

    Returns
    -------
    report : LocalizationReport
        The per-image rows of every finished chunk, their summary and the run's
        configuration; ``report.complete`` says whether every planned chunk is there, once.

    Raises
    ------
    FileNotFoundError
        When ``out`` holds no ``manifest.json``.
    ValueError
        When the manifest cannot be read, or was written by a version of sklearn-caf with
        another run folder format.

    Warns
    -----
    UserWarning
        For each part that fails verification (corrupt, of another chunk or run, outside
        the run's plan, without its checksum file): it is left out of the report.

    Examples
    --------
    >>> from sklearn_caf.evaluation import load_report
    >>> report = load_report("caf-eval")  # doctest: +SKIP
    >>> report.summary  # doctest: +SKIP
    """
    _, pq = _parquet()
    out = Path(out)
    manifest = out / _MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no evaluation run: {_MANIFEST} is missing.")
    config = _read_manifest(out)
    good, bad = _verified_parts(out, config)
    for path, _, problem in bad:
        warnings.warn(
            f"{path} is not read: {problem}. Resuming the run (evaluate_localization with "
            "the same arguments and out) sets it aside and computes its chunk again.",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    tables = []
    for path in good.values():
        try:
            tables.append(pq.read_table(path).replace_schema_metadata(None))
        except Exception as exc:  # verified, yet unreadable: name it rather than guess
            raise OSError(f"{path} passed its checksum but cannot be read: {exc}") from exc
    return _report(tables, config, out, complete=len(good) == config["n_chunks"])
