"""``larr export``: a trained run -> a Triton model repository.

    larr export --checkpoints runs/tiny --target cpu                             # -> runs/tiny/model_repository
    larr export --checkpoints runs/tiny --target cpu --embedder-precision int8   # int8 CPU
    larr export --checkpoints runs/tiny --target cpu --device cuda               # GPU host, no TensorRT
    larr export --checkpoints runs/tiny --target gpu --out runs/tiny/trt_repository   # TensorRT plans

The parser is argparse only; torch and the exporters are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path

from larr.export.options import TARGETS, RepositoryError, RepositoryOptions, not_servable_reason
from larr.layout import SERVABLE_VARIANTS, RunLayout, Variant
from larr.serving.runtime import RUNTIMES

_HAND_WRITTEN = ("target", "variant")  # RepositoryOptions fields whose flags say more than the field's help


def _flag(name: str, default: object, help_text: str) -> dict:
    """argparse keywords of a RepositoryOptions field's flag: an enum or the runtime offers its values."""
    keywords: dict = {"help": help_text.replace("%", "%%")}  # argparse formats help strings with %
    if isinstance(default, Enum):
        keywords.update(default=default.value, choices=[member.value for member in type(default)])
    elif name == "runtime":
        keywords.update(default=default, choices=RUNTIMES)
    else:
        keywords.update(default=default, type=type(default))
    return keywords


def configure_export_parser(parser: argparse.ArgumentParser) -> None:
    defaults = RepositoryOptions()
    add = parser.add_argument
    add("--checkpoints", required=True, type=Path, help="run folder of `larr train` (config.yaml, embed/, ctr/)")
    add("--out", type=Path, help="model repository folder to write (default: CHECKPOINTS/model_repository)")
    add(
        "--target", required=True, choices=TARGETS,
        help="cpu: python-backend models on ONNX Runtime or PyTorch (any Triton, also on GPUs via --device cuda); "
        "gpu: TensorRT plans (needs TensorRT and a CUDA GPU here, the NGC image to serve)",
    )
    # every variant is a choice, so that asking for an unservable one gets the reason, not argparse's "invalid choice"
    unservable = "; ".join(f"{v.value}: {not_servable_reason(v)}" for v in Variant if not v.servable)
    add("--variant", default=defaults.variant.value, choices=[v.value for v in Variant],
        help=f"which trained CTR model to serve: one of {[v.value for v in SERVABLE_VARIANTS]}. Not servable by the "
        f"ensemble ({unservable}); score those offline with `larr evaluate`")
    # every other option is a RepositoryOptions field: flag, default, type and help come from the field
    for option in fields(RepositoryOptions):
        if option.name not in _HAND_WRITTEN:
            add(f"--{option.name.replace('_', '-')}", **_flag(option.name, getattr(defaults, option.name), option.metadata["help"]))
    add("--num-users", type=int, help="user id range (default: from the run's dataset)")
    add("--num-items", type=int, help="item id range (default: from the run's dataset)")
    add("--adapters", type=Path, help="folder with <model>/1/model.py adapters (default: the ones installed with larr)")


def run_export(args: argparse.Namespace) -> int:
    """Run ``larr export``; returns the exit code (2 with a message on stderr for a clear user error)."""
    try:  # the flags alone, before anything heavy is imported
        options = RepositoryOptions(**{option.name: getattr(args, option.name) for option in fields(RepositoryOptions)})
    except ValueError as error:
        print(f"larr export: {error}", file=sys.stderr)
        return 2

    from larr.export.repository import write_repository
    from larr.export.tensorrt_build import TensorRTUnavailableError

    out = args.out if args.out is not None else RunLayout(args.checkpoints).model_repository_dir
    try:
        write_repository(
            args.checkpoints, out, options, num_users=args.num_users, num_items=args.num_items,
            adapters_dir=args.adapters, progress=lambda line: print(line, flush=True),
        )
    except TensorRTUnavailableError as error:
        print(
            f"larr export --target gpu: {error}\n"
            "On a GPU host without TensorRT, serve with ONNX Runtime on the GPU instead: --target cpu --device cuda",
            file=sys.stderr,
        )
        return 2
    except RepositoryError as error:
        print(f"larr export: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="larr export", description=__doc__.splitlines()[0])
    configure_export_parser(parser)
    return run_export(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
