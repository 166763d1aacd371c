"""``gcl export``: a trained text model to ONNX (fp32 and ONNX Runtime dynamic int8), for
``--encoder-backend onnx|onnx-int8`` in ``gcl search``, ``gcl serve`` and ``gcl index build``.
See :mod:`gcl.encoders.onnx` and docs/serve.md."""

from __future__ import annotations

import sys

from gcl.cli.options import check_out_dir


def add_parser(sub) -> None:
    from gcl.encoders.onnx import QUANTIZE_CHOICES, ExportOptions

    d = ExportOptions()
    p = sub.add_parser("export", help="export a text model to ONNX (fp32 + dynamic int8) for the onnx backends",
                       description="Write the --model text bi-encoder as ONNX graphs beside a copy of the model: "
                                   "--encoder-backend onnx / onnx-int8 then load OUT. Needs pip install 'gcl[onnx]'.")
    p.add_argument("--model", required=True,
                   help="the text model to export: a gcl model dir, sentence-transformers dir or name (minilm)")
    p.add_argument("--out", required=True, help="directory to write (the model copy, onnx/, gcl_onnx.json)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=d.quantize,
                   help=f"int8: also write the ONNX Runtime dynamic int8 graph; none: fp32 only (default {d.quantize})")
    p.add_argument("--opset", type=int, default=d.opset, help=f"ONNX opset of the graph (default {d.opset})")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from gcl.encoders.onnx import ExportOptions, export_model
    from gcl.encoders.text import MINILM_ALIASES
    from gcl.errors import ConfigError

    if not Path(args.model).expanduser().exists() and args.model.lower() not in MINILM_ALIASES:
        raise ConfigError(f"--model {args.model}: no such model directory (gcl export reads a local model "
                          "directory or the minilm alias)")
    check_out_dir(args.out, "--out")
    out = export_model(args.model, args.out, ExportOptions(quantize=args.quantize, opset=args.opset))
    print(f"exported {args.model} to {out} (quantize {args.quantize}); use --encoder-backend onnx"
          f"{'|onnx-int8' if args.quantize == 'int8' else ''} with --model {out}", file=sys.stderr)
    return 0


def add_backend_arg(p, *, option: str = "--encoder-backend", what: str = "texts") -> None:
    """The ``--encoder-backend`` option of gcl search / serve / index build (``--query-backend`` of evaluate)."""
    from gcl.encoders.onnx import BACKENDS, DEFAULT_BACKEND

    p.add_argument(option, choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"engine that encodes {what}: torch (default), or onnx / onnx-int8 (fp32 / dynamic int8 "
                        "ONNX Runtime graphs; --model must then be a directory written by 'gcl export')")
