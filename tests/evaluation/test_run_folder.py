"""Faults injected into a run folder (issue 20): parts that are corrupt, foreign, duplicated
or stray are never read into a report; a resume sets them aside and computes them again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from test_evaluation import assert_same_rows, pooled_cnn  # noqa: E402

from sklearn_caf import GradCAMExplainer  # noqa: E402
from sklearn_caf.datasets import make_wsol_dataset  # noqa: E402
from sklearn_caf.evaluation import evaluate_localization, load_report  # noqa: E402

BATCH = 4  # 10 images: chunks of 4, 4 and 2


@pytest.fixture(scope="module")
def data():
    return make_wsol_dataset(10, image_size=32, n_classes=3, random_state=0)


@pytest.fixture(scope="module")
def net():
    return pooled_cnn()


def run(net, data, out, **kwargs):
    explainers = {"gradcam": GradCAMExplainer(model=net, layer="pool")}
    return evaluate_localization(
        explainers, data, batch_size=BATCH, out=out, progress=False, **kwargs
    )


@pytest.fixture(scope="module")
def reference(net, data, tmp_path_factory):
    """A finished run's folder (copied by each test) and its rows."""
    out = tmp_path_factory.mktemp("reference") / "run"
    report = run(net, data, out)
    assert report.complete
    return out, report


@pytest.fixture
def folder(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def part(out, chunk):
    return out / f"part-{chunk:06d}.parquet"


def checksum(path):
    return path.with_name(path.name + ".sha256")


def copy_part(source, dest):
    shutil.copyfile(source, dest)
    shutil.copyfile(checksum(source), checksum(dest))


def assert_set_aside_and_recomputed(net, data, out, reference, bad_name, reason):
    """load_report ignores the bad part with a warning; a resume moves it to rejected/,
    recomputes what is missing and gives exactly the reference rows."""
    with pytest.warns(UserWarning, match=rf"{bad_name} is not read: {reason}"):
        partial = load_report(out)
    keys = ["image_index", "explained_class"]
    assert not partial.per_image.duplicated(keys).any()  # no duplicate rows
    with pytest.warns(UserWarning, match=rf"{bad_name} is not a valid part.*{reason}"):
        resumed = run(net, data, out)
    assert resumed.complete
    assert_same_rows(resumed.per_image, reference[1].per_image)
    assert (out / "rejected" / bad_name).is_file()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        f"part-{c:06d}.parquet" for c in range(3)
    ]
    return partial


def test_parts_record_their_run_chunk_rows_and_checksum(reference):
    out, report = reference
    pq = pytest.importorskip("pyarrow.parquet")
    for chunk in range(3):
        record = json.loads(checksum(part(out, chunk)).read_text())
        assert record["chunk"] == chunk and record["format"] == 3
        assert record["n_rows"] == pq.read_metadata(part(out, chunk)).num_rows
        own = json.loads(pq.read_schema(part(out, chunk)).metadata[b"sklearn_caf.part"])
        assert own["run"] == record["run"] and own["chunk"] == chunk
    assert json.loads((out / "manifest.json").read_text())["format"] == 3
    assert report.n_images == 10


def test_a_copy_of_another_chunks_part_is_refused(net, data, folder, reference):
    # As the issue measured it: part 0 copied over part 1, with and without its checksum.
    copy_part(part(folder, 0), part(folder, 1))
    partial = assert_set_aside_and_recomputed(
        net, data, folder, reference, "part-000001.parquet", "it is a copy of chunk 0's part"
    )
    assert not partial.complete and partial.n_images == 6

    shutil.copyfile(part(folder, 0), part(folder, 2))  # the checksum file left as it was
    assert_set_aside_and_recomputed(
        net, data, folder, reference, "part-000002.parquet", "its bytes do not match"
    )


def test_a_part_of_another_run_is_refused(net, data, folder, reference, tmp_path):
    other = tmp_path / "other"
    run(net, data, other, box_threshold=0.5)
    copy_part(part(other, 1), part(folder, 1))
    assert_set_aside_and_recomputed(
        net, data, folder, reference, "part-000001.parquet", "it belongs to another run"
    )


def test_stray_and_duplicate_parts_are_refused(net, data, folder, reference):
    # A part beyond the plan and a second name for chunk 1: the report stays complete with
    # exactly the planned chunks, each once.
    copy_part(part(folder, 0), part(folder, 99))
    copy_part(part(folder, 1), folder / "part-1.parquet")
    with pytest.warns(UserWarning) as caught:
        report = load_report(folder)
    messages = " ".join(str(w.message) for w in caught)
    assert "part-000099.parquet is not read: chunk 99 is outside this run's plan" in messages
    assert "part-1.parquet is not read: its name is not a chunk's" in messages
    assert report.complete
    assert_same_rows(report.per_image, reference[1].per_image)
    with pytest.warns(UserWarning) as caught:
        resumed = run(net, data, folder)
    messages = " ".join(str(w.message) for w in caught)
    assert "part-000099.parquet is not a valid part" in messages
    assert "part-1.parquet is not a valid part" in messages
    assert resumed.complete
    assert_same_rows(resumed.per_image, reference[1].per_image)
    assert sorted(p.name for p in (folder / "rejected").glob("*.parquet")) == [
        "part-000099.parquet",
        "part-1.parquet",
    ]


def test_a_flipped_byte_is_caught_and_recomputed(net, data, folder, reference):
    path = part(folder, 1)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    partial = assert_set_aside_and_recomputed(
        net, data, folder, reference, "part-000001.parquet", "its bytes do not match its checksum"
    )
    assert not partial.complete
    np.testing.assert_array_equal(np.unique(partial.per_image["image_index"]), [0, 1, 2, 3, 8, 9])


def test_a_part_without_its_checksum_file_is_recomputed(net, data, folder, reference):
    checksum(part(folder, 2)).unlink()
    assert_set_aside_and_recomputed(
        net, data, folder, reference, "part-000002.parquet", "it has no checksum file"
    )


def test_old_format_and_unreadable_manifests_are_refused_clearly(net, data, folder):
    manifest = folder / "manifest.json"
    config = json.loads(manifest.read_text())
    for old in (1, 2):  # 2: boxes in the model's frame only
        manifest.write_text(json.dumps({**config, "format": old}))
        for call in (lambda: load_report(folder), lambda: run(net, data, folder)):
            with pytest.raises(
                ValueError, match=rf"format {old}.*Start the run again in a new directory"
            ):
                call()
    manifest.write_text(json.dumps(config)[:50])
    with pytest.raises(ValueError, match=r"manifest\.json cannot be read as a run manifest"):
        load_report(folder)


_HOLD_LOCK = """
import sys, time
from sklearn_caf.evaluation._store import _run_lock
with _run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_dead_holder_is_not(
    net, data, tmp_path
):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from test_evaluation import ROOT

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # The holder's temporary part (a write in progress) must survive the refused run.
        tmp = out / ".part-000000.parquet.1-abcd.tmp"
        tmp.write_bytes(b"being written")
        pattern = rf"in use by another run \(pid {holder.pid} on host {socket.gethostname()}"
        with pytest.raises(ValueError, match=pattern):
            run(net, data, out)
        assert tmp.read_bytes() == b"being written"
        assert not (out / "manifest.json").exists()
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()
    # The killed holder's lock is stale: the next run takes it and cleans up after it.
    assert (out / ".lock").exists()
    report = run(net, data, out)
    assert report.complete and not tmp.exists()
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()


# -- writable output, no temporary file left --------------------------------------------------
def _no_chunk_computed(monkeypatch):
    import sklearn_caf.evaluation._run as run_module

    def refuse(*args, **kwargs):
        raise AssertionError("a chunk was computed before out was checked")

    monkeypatch.setattr(run_module, "_evaluate_chunk", refuse)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anyway")
def test_a_read_only_out_is_refused_before_computing(net, data, folder, monkeypatch):
    part(folder, 1).unlink()  # a resume with one chunk to compute
    folder.chmod(0o555)
    _no_chunk_computed(monkeypatch)
    try:
        with pytest.raises(ValueError, match=r"is not a writable directory"):
            run(net, data, folder)
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_unwritable_out_is_refused_before_computing(net, data, monkeypatch):
    _no_chunk_computed(monkeypatch)  # /proc refuses new files, even to root
    with pytest.raises(ValueError, match=r"out='/proc/self' is not a writable directory"):
        run(net, data, "/proc/self")


def test_a_failure_mid_run_leaves_no_temporary_file(net, data, tmp_path, monkeypatch):
    import sklearn_caf.evaluation._store as store

    pq = store._parquet()[1]
    write_table = pq.write_table
    calls = []

    def fill_the_disk(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 2:  # the second part: half written, then the disk is full
            Path(where).write_bytes(b"PAR1" + b"\0" * 100)
            raise OSError(28, "No space left on device")
        return write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", fill_the_disk)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        run(net, data, out)
    assert len(calls) == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert part(out, 0).exists() and not part(out, 1).exists()
    monkeypatch.setattr(pq, "write_table", write_table)
    assert run(net, data, out).complete  # what was done is resumed
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
