"""The run folder: its manifest, atomic part files, resuming and :func:`load_report`."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import import_optional
from ._config import _differences, upgrade_manifest
from ._report import FAITHFULNESS_SUMMARY, LocalizationReport, _report

_MANIFEST = "manifest.json"


_PART_PREFIX = "part-"


def _parquet():
    needed_by = "evaluation part files (Parquet)"
    return (
        import_optional("pyarrow", needed_by=needed_by),
        import_optional("pyarrow.parquet", needed_by=needed_by),
    )


def _write_atomically(path: Path, write) -> None:
    """Write with ``write(tmp)`` under a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
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


def _finished_chunks(out: Path) -> dict[int, Path]:
    found = {}
    for path in out.glob(f"{_PART_PREFIX}*.parquet"):
        stem = path.stem[len(_PART_PREFIX) :]
        if stem.isdigit():
            found[int(stem)] = path
    return dict(sorted(found.items()))


def _prepare_out(out: Any, config: dict) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a directory.")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / _MANIFEST
    normalized = json.loads(json.dumps(config))
    if manifest.exists():
        try:
            old = upgrade_manifest(json.loads(manifest.read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{manifest} cannot be read as a run manifest: {exc}") from None
        diff = _differences(old, normalized)
        if diff:
            shown = ", ".join(diff[:6]) + (", ..." if len(diff) > 6 else "")
            raise ValueError(
                f"out={str(out)!r} holds a run with a different configuration (differs in: "
                f"{shown}); resume it with the same explainers, dataset and settings, or give "
                "another out directory."
            )
    else:
        if _finished_chunks(out):
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
    return out


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
        elif key == "pred_top5":
            out[key] = pa.array(values, type=pa.list_(pa.int64()))
        else:
            out[key] = pa.array(values)
    return out


def load_report(out: str | os.PathLike) -> LocalizationReport:
    """Read the report of a run written by :func:`evaluate_localization` with ``out``.

    A run still going, or killed, gives a partial report: the chunks finished so far
    (``report.complete`` is False).

    Parameters
    ----------
    out : str or path
        The run's directory.

    Returns
    -------
    report : LocalizationReport
        The per-image rows of every finished chunk, their summary and the run's
        configuration; ``report.complete`` says whether every chunk is there.

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
    config = upgrade_manifest(json.loads(manifest.read_text()))
    tables = [pq.read_table(path) for path in _finished_chunks(out).values()]
    return _report(tables, config, out)
