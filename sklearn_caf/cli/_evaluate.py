"""``sklearn-caf evaluate``: localization benchmarks of a model on a dataset on disk.

Reads a dataset (wsolevaluation metadata, CUB-200-2011 or Pascal VOC XML), explains it with
the chosen methods through :func:`sklearn_caf.evaluation.evaluate_localization` (resumable in
``--out``, on a Dask cluster with ``--scheduler``), prints the summary and writes
``summary.csv``, ``per_image.parquet``, ``curves.png`` and ``contact_sheet.png`` (and, with
``--faithfulness``, ``deletion_insertion.png``).

The defaults are the API's (``--batch-size`` 64, ``--box-threshold`` 0.2, ``--image-size``
224) and every ``--preprocess`` preset is a :class:`~sklearn_caf.datasets.NormalizeImage`, so
that the same run from Python gives the same tables and resumes the same run folder.

Every error that can be foreseen is checked before anything is computed and reported as one
line with exit status 2. Nothing heavy is imported until the command runs; torch only when the
model needs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from .._utils import import_optional
from ._args import positive_int

_PROG = "sklearn-caf evaluate"

#: Method names of ``--methods`` and what they build (task-dependent for Grad-CAM).
METHODS = ("l2caf-oblivious", "l2caf-specific", "gradcam", "gradcam-abs")
FORMATS = ("wsol", "cub", "voc")
EFFICIENTNET = "efficientnet-lite0"

#: ``--preprocess`` presets -> the arguments of :class:`~sklearn_caf.datasets.NormalizeImage`
#: that give the same preprocessing from Python (same pixels, same dataset fingerprint).
PREPROCESS_PRESETS = {
    "[0,1]": {},
    "imagenet": {"mean": "imagenet", "std": "imagenet"},
    "inception": {"mean": "inception", "std": "inception"},
    "efficientnet-lite": {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3},
}
_PRESET_WORDS = {
    "[0,1]": "pixel / 255, in [0, 1]",
    "imagenet": "ImageNet's mean and std",
    "inception": "pixel / 127.5 - 1, in [-1, 1]",
    "efficientnet-lite": "(pixel - 127) / 128",
}


class CommandError(Exception):
    """A foreseeable failure: reported as one line, exit status 2."""


def add_parser(commands) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the subcommands of ``sklearn-caf``."""
    parser = commands.add_parser(
        "evaluate",
        help="localization benchmarks (top-1/top-5/GT-known, MaxBoxAcc) on a dataset on disk",
        description=(
            "Explain a dataset with one or more methods and score how well the maps localize "
            "the ground-truth boxes: top-1/top-5/GT-known localization and MaxBoxAcc v1/v2 "
            "(or Recall@1, NMI and retrieval localization with --task retrieval). Writes "
            "summary.csv, per_image.parquet, curves.png and contact_sheet.png into --out; "
            "rerunning with the same --out resumes an interrupted run."
        ),
    )
    parser.add_argument("--dataset", required=True, metavar="DIR", help=(
        "wsol: the metadata folder (image_ids.txt, class_labels.txt, image_sizes.txt, "
        "localization.txt); cub: the CUB_200_2011 folder; voc: the annotations folder"
    ))  # fmt: skip
    parser.add_argument("--format", required=True, choices=FORMATS, help="dataset layout")
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder of the images (wsol and voc; default: --dataset)",
    )
    parser.add_argument("--split", default="test", help="cub split (default: %(default)s)")
    parser.add_argument(
        "--methods",
        default="l2caf-oblivious,l2caf-specific,gradcam",
        help=f"comma-separated, among {', '.join(METHODS)} (default: %(default)s)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--model",
        default=EFFICIENTNET,
        help=f"'{EFFICIENTNET}' (ImageNet weights, offline; needs the demo extra) or "
        "'package.module:factory', a function returning the model (default: %(default)s)",
    )
    parser.add_argument("--layer", help="layer to explain (required with a factory model)")
    parser.add_argument(
        "--preprocess",
        metavar="PRESET|MODULE:FUNCTION",
        help="how each resized image becomes the model's input, channels first: "
        "'[0,1]' (pixel / 255), 'imagenet' (ImageNet's mean and std), 'inception' ([-1, 1]), "
        "'efficientnet-lite' ((pixel - 127) / 128), or 'package.module:function' taking ONE "
        "(H, W, 3) uint8 image (default: efficientnet-lite with that model, else '[0,1]', "
        "said on stderr)",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "retrieval"),
        default="classification",
        help="classification networks (logits: top-1/top-5/GT-known localization) or "
        "retrieval networks (embeddings: Recall@1, NMI) (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=positive_int, default=224, metavar="PX",
                        help="images are resized to PX x PX before the model "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--box-threshold", type=float, default=0.2, metavar="T",
                        help="each map's box keeps the pixels at T of its maximum or more, "
                        "in [0, 1] (default: %(default)s, CAM's rule)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="B",
                        help="images per chunk, the unit of resuming (default: %(default)s, "
                        "as evaluate_localization's)")  # fmt: skip
    parser.add_argument("--n-jobs", type=int, default=None, metavar="N",
                        help="chunks in parallel (joblib; default: 1)")  # fmt: skip
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the chunks on a Dask scheduler (tcp://host:8786)")  # fmt: skip
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="evaluate the first N images only (default: all)")  # fmt: skip
    parser.add_argument("--device", default="auto",
                        help="'auto', 'cpu', 'cuda', 'cuda:1'... "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--examples", type=int, default=4, metavar="K",
                        help="worst and best images per method in the sheet; 0: none "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--faithfulness", type=positive_int, default=None, metavar="STEPS",
                        help="also score each top-1 map by deletion and insertion (RISE) in "
                        "STEPS steps; writes deletion_insertion.png")  # fmt: skip
    parser.add_argument("--protocol", choices=("wsol", "sklearn-caf"), default="wsol",
                        help="box protocol of MaxBoxAcc: 'wsol' reproduces wsolevaluation's "
                        "BoxEvaluator (published WSOL tables), 'sklearn-caf' the library's "
                        "tight pixel boxes (default: %(default)s)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(handler=run)
    return parser


# -- checks before computing ------------------------------------------------------------------
def _check_methods(text: str, task: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise CommandError("--methods is empty; give one or more of " + ", ".join(METHODS))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise CommandError(
            f"unknown method {unknown[0]!r} in --methods; choose among {', '.join(METHODS)}"
        )
    if len(set(names)) != len(names):
        raise CommandError(f"--methods names a method twice: {text!r}")
    if task == "retrieval" and "l2caf-specific" in names:
        raise CommandError(
            "l2caf-specific explains classes; --task retrieval needs maps of the whole "
            "embedding (l2caf-oblivious, gradcam, gradcam-abs)"
        )
    return names


def _check_out(out: str) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise CommandError(f"--out {out!r} is not a writable directory ({exc.strerror})") from None
    return path


def _check_dir(value: str, option: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise CommandError(f"{option} {value!r} {what}")
    return path


def _resolve(spec: str, option: str):
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        built_in = f"'{EFFICIENTNET}' (the built-in model) or " if option == "--model" else ""
        raise CommandError(f"{option} must be {built_in}'package.module:function'; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"{option} {spec!r}: cannot import {module_name!r} ({exc})") from None
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise CommandError(f"{option} {spec!r}: {module_name} has no function {attr!r}")
    return obj


def _preprocess(args):
    """The ``preprocess`` of the dataset: a preset, a function, or the model's default.

    A default chosen for a factory ``--model`` is said on stderr (unless ``--quiet``): the
    CLI never picks a normalization silently.
    """
    from ..datasets import NormalizeImage

    spec = args.preprocess
    if spec is None:
        spec = "efficientnet-lite" if args.model == EFFICIENTNET else "[0,1]"
        if args.model != EFFICIENTNET and not args.quiet:
            print(
                f"{_PROG}: --model {args.model} with no --preprocess: each image is scaled to "
                "[0, 1], channels first (--preprocess '[0,1]'; from Python, "
                "preprocess=NormalizeImage()); give --preprocess imagenet, inception, "
                "efficientnet-lite or package.module:function for your model's own",
                file=sys.stderr,
            )
    if spec in PREPROCESS_PRESETS:
        return NormalizeImage(**PREPROCESS_PRESETS[spec])
    if ":" not in spec:
        raise CommandError(
            f"--preprocess {spec!r} is neither a preset ({', '.join(PREPROCESS_PRESETS)}) "
            "nor 'package.module:function'"
        )
    return _resolve(spec, "--preprocess")


def _load_model(args):
    """``(model, layer)``."""
    if args.model == EFFICIENTNET:
        try:
            from sklearn_caf_torch.pretrained import EFFICIENTNET_LITE0_LAYER, efficientnet_lite0

            model = efficientnet_lite0()
        except ImportError as exc:
            raise CommandError(f"--model {EFFICIENTNET}: {exc}") from None
        return model, args.layer or EFFICIENTNET_LITE0_LAYER
    factory = _resolve(args.model, "--model")
    if args.layer is None:
        raise CommandError("--layer is required with a factory --model")
    try:
        model = factory()
    except Exception as exc:
        raise CommandError(f"--model {args.model!r} failed: {type(exc).__name__}: {exc}") from None
    return model, args.layer


def _load_dataset(args, preprocess):
    from ..datasets import ImageBoxDataset

    root = _check_dir(args.dataset, "--dataset")
    images = _check_dir(args.image_root, "--image-root") if args.image_root else root
    common = {
        "image_size": args.image_size,
        "max_images": args.max_images,
        "preprocess": preprocess,
    }
    try:
        if args.format == "wsol":
            return ImageBoxDataset.from_wsol(root, images, **common)
        if args.format == "cub":
            return ImageBoxDataset.from_cub(root, args.split, **common)
        return ImageBoxDataset.from_voc(root, images, **common)
    except (OSError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if str(exc).startswith("preprocess="):  # a batch function, or one that fails
            raise CommandError(f"--preprocess {args.preprocess!r}: {message}") from None
        raise CommandError(f"--dataset {args.dataset!r} ({args.format}): {message}") from None


def _explainers(names, model, layer, task, device) -> dict:
    from .. import GradCAMExplainer, L2CAFExplainer

    objective = "embedding" if task == "retrieval" else "class"
    build = {
        "l2caf-oblivious": lambda: L2CAFExplainer(model=model, layer=layer, device=device),
        "l2caf-specific": lambda: L2CAFExplainer(
            model=model, layer=layer, objective="class-specific", device=device
        ),
        "gradcam": lambda: GradCAMExplainer(
            model=model, layer=layer, objective=objective, device=device
        ),
        "gradcam-abs": lambda: GradCAMExplainer(
            model=model, layer=layer, objective=objective, activation="abs", device=device
        ),
    }
    return {name: build[name]() for name in names}


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


# -- the command ------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run ``sklearn-caf evaluate`` with parsed arguments; returns the exit status."""
    try:
        return _run(args)
    except CommandError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        # Finished chunks are on disk; a rerun skips them.
        print(
            f"\n{_PROG}: interrupted; run the same command again to resume (the finished "
            f"chunks in {args.out} are kept).",
            file=sys.stderr,
        )
        return 130


def _run(args) -> int:
    if not 0 <= args.box_threshold <= 1:
        raise CommandError(f"--box-threshold must be in [0, 1]; got {args.box_threshold}")
    if args.faithfulness is not None and args.task != "classification":
        raise CommandError(
            "--faithfulness follows a class's probability; it needs --task classification"
        )
    if args.n_jobs is not None and args.n_jobs == 0:
        raise CommandError("--n-jobs must not be 0 (1 is serial, -1 every core)")
    if args.examples < 0:
        raise CommandError(f"--examples must be 0 or more; got {args.examples}")
    names = _check_methods(args.methods, args.task)
    _check_dir(args.dataset, "--dataset")
    if args.image_root:
        _check_dir(args.image_root, "--image-root")
    out = _check_out(args.out)
    try:
        import_optional("pandas", needed_by="sklearn-caf evaluate")
        import_optional("pyarrow", needed_by="sklearn-caf evaluate")
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    client = None
    if args.scheduler:
        try:
            Client = import_optional("distributed", needed_by="--scheduler", extra="dask").Client
        except ImportError as exc:
            raise CommandError(str(exc)) from None
        try:
            client = Client(args.scheduler, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise CommandError(f"--scheduler {args.scheduler!r}: cannot connect ({exc})") from None

    preprocess = _preprocess(args)
    model, layer = _load_model(args)
    dataset = _load_dataset(args, preprocess)
    explainers = _explainers(names, model, layer, args.task, args.device)
    try:
        report = _evaluate(explainers, dataset, args, out, client)
    except ValueError as exc:  # a refused resume, a layer that does not exist...
        raise CommandError(str(exc).splitlines()[0]) from None
    except FileNotFoundError as exc:  # an image listed in the metadata but missing
        raise CommandError(
            f"{str(exc).splitlines()[0]} The chunks done so far are saved; restore the file "
            "(or fix the metadata and use a new --out) and run the command again"
        ) from None
    finally:
        if client is not None:
            client.close()
    try:
        _write_outputs(report, dataset, explainers, out, args)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        where = exc.filename or out
        raise CommandError(
            f"cannot write the results to {str(where)!r} ({exc.strerror or exc}); the run "
            f"itself is saved in {str(out)!r}: free space and run the same command again"
        ) from None
    return 0


# What each box protocol's MaxBoxAcc reproduces (printed under the summary).
_PROTOCOL_SOURCES = {
    "wsol": "wsolevaluation's BoxEvaluator, as in published WSOL tables",
    "sklearn-caf": "sklearn-caf's tight pixel boxes, not wsolevaluation's numbers",
}


def _evaluate(explainers, dataset, args, out, client):
    import joblib

    from ..evaluation import evaluate_localization

    kwargs = {
        "task": args.task,
        "box_threshold": args.box_threshold,
        "batch_size": args.batch_size,
        "out": out,
        "n_jobs": args.n_jobs,
        "progress": not args.quiet,
        "faithfulness": (False if args.faithfulness is None else {"n_steps": args.faithfulness}),
        "protocol": args.protocol,
    }
    if client is None:
        return evaluate_localization(explainers, dataset, **kwargs)
    with joblib.parallel_backend("dask"):
        return evaluate_localization(explainers, dataset, **kwargs)


def _write_outputs(report, dataset, explainers, out: Path, args) -> None:
    import_optional("matplotlib", needed_by="sklearn-caf evaluate's figures").use(
        "Agg"
    )  # no window
    plt = import_optional("matplotlib.pyplot", needed_by="sklearn-caf evaluate's figures")

    from ..plotting import plot_localization_examples, plot_threshold_curves

    # The CSV says which box protocol produced max_box_acc and max_box_acc_v2.
    report.summary.assign(protocol=report.config.get("protocol", "sklearn-caf")).to_csv(
        out / "summary.csv"
    )
    per_image = out / "per_image.parquet"
    tmp = out / f".per_image.parquet.{os.getpid()}.tmp"
    try:
        report.per_image.to_parquet(tmp, index=False)
        os.replace(tmp, per_image)
    except OSError as exc:
        if exc.filename is None:  # pyarrow's errors name no file
            exc.filename = str(per_image)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    fig = plot_threshold_curves(report)
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    if "deletion_curve" in report.per_image.columns:
        from ..plotting import plot_deletion_insertion

        fig = plot_deletion_insertion(report)
        fig.savefig(out / "deletion_insertion.png", dpi=100)
        plt.close(fig)
    if args.examples:
        Image = import_optional("PIL.Image", needed_by="sklearn-caf evaluate's contact sheet")
        sheet = plot_localization_examples(report, dataset, explainers, n_images=args.examples)
        Image.fromarray(sheet).save(out / "contact_sheet.png")
    if not args.quiet:
        print(report.summary.to_string(float_format=lambda v: f"{v:.4f}"))
        protocol = report.config.get("protocol", "sklearn-caf")
        source = _PROTOCOL_SOURCES.get(protocol, protocol)
        print(f"max_box_acc, max_box_acc_v2: protocol {protocol!r} ({source})")
        print(f"\n{report.n_images} images; results in {out}")
