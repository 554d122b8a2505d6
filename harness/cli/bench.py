"""``harness bench``: per-image latency and throughput of registry models, fast paths checked against fp32 eager."""

from __future__ import annotations

import argparse
from pathlib import Path

BENCH_EPILOG = """\
examples:
  harness bench --model wu2020 --model fasterrcnn_vgg16 --scenario single-stream --json out.json
  harness bench --model fasterrcnn_vgg16 --dtype bf16 --channels-last --queries 8     eager fp32 vs the fast path
  harness bench --model wu2020 --path bf16 --path fp32+channels_last --path bf16+channels_last   several paths
  harness bench --model fasterrcnn_vgg16 --path bf16@box_head+compile   bf16 box head, compiled fp32 backbone
  harness bench --scenario offline --device cuda --dtype bf16 --size 512              on a GPU, at the paper's size
  harness bench --checkpoint runs/lu2018-dwi/checkpoints/best.pt --path bf16+channels_last+fuse --interleave
  harness bench --model wu2020 --device cuda --path bf16+cuda_graphs --path fp32+uint8        CUDA graphs, uint8 copy
  harness bench --model wu2020 --engine torch --engine onnxruntime --engine openvino --interleave   engines side by side
  harness bench --model wu2020 --path openvino:bf16 --path onnxruntime:fp32     one engine path each

Engines (--engine, or ENGINE:DTYPE paths) run the model exported to ONNX: onnxruntime (fp32, graph optimisations
on; CPU or CUDA), openvino (fp32 and bf16; CPU, bf16 where the CPU has it natively), tensorrt (fp32 and fp16; CUDA,
classifiers). Every engine uses --threads threads (default: torch's), reported in the table and the JSON.
Every path other than eager fp32 is first checked against eager fp32 outputs on the same slices (probabilities
within a tolerance, detections above 0.5 matched at IoU >= 0.9); a path that fails is reported and not timed.
Models run with seeded random weights unless --checkpoint gives trained ones (their slices are then of the
sequence and size the model was trained on).
Results go to the MLflow experiment "benchmarks" (--no-mlflow to skip). Details: docs/benchmarks.md.
"""


def add_bench(commands) -> None:
    """Add the ``bench`` sub-command to ``commands`` (the ``harness`` sub-parsers)."""
    parser = commands.add_parser(
        "bench",
        help="latency and throughput of models (MLPerf-style single-stream / offline), fast inference paths",
        description="Time registry models on slices of a small synthetic cohort: single-stream (one image per "
        "query: p50/p90/p99 latency) or offline (images/s at the best batch size), the per-case time of a "
        "100-slice study and its ratio to the papers' 0.2 s/image. The eager fp32 path is always timed as the "
        "reference; a fast path (--dtype, --channels-last, --compile) is timed only when its outputs equal it.",
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="registry name, seeded random weights (repeatable; default: wu2020 and "
        "fasterrcnn_vgg16 unless --checkpoint is given)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        dest="checkpoints",
        default=[],
        type=Path,
        metavar="PT",
        help="a trained model to time, e.g. runs/NAME/checkpoints/best.pt (repeatable)",
    )
    parser.add_argument("--scenario", choices=("single-stream", "offline"), default="single-stream")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast dtype of the fast path (fp16: CUDA only)",
    )
    parser.add_argument(
        "--amp-scope",
        choices=("all", "box_head"),
        default="all",
        help="detectors: reduced precision everywhere dense (all) or in the box head only, the "
        "backbone and RPN staying fp32 (box_head)",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the classifier / the detector's backbone at a fixed size"
    )
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="fold BatchNorm into the convolution before it (the classifier / the detector's backbone)",
    )
    parser.add_argument(
        "--uint8",
        action="store_true",
        help="copy images to the device as uint8 (quantised per image on the host, restored to float32 on the device)",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="replay the classifier as CUDA graphs (CUDA, classifiers only)"
    )
    parser.add_argument(
        "--path",
        action="append",
        dest="paths",
        default=[],
        metavar="PATH",
        help="another path to time in the same run (repeatable): DTYPE[@box_head][+channels_last]"
        "[+fuse][+compile][+uint8][+cuda_graphs], e.g. --path bf16 --path fp32+channels_last --path "
        "bf16@box_head; or an engine path ENGINE:DTYPE, e.g. --path openvino:bf16",
    )
    parser.add_argument(
        "--engine",
        action="append",
        dest="engines",
        default=[],
        choices=("torch", "onnxruntime", "openvino", "tensorrt"),
        help="also time the model on this engine, at each precision it offers (repeatable): onnxruntime:fp32, "
        "openvino:fp32 and openvino:bf16, tensorrt:fp32 and tensorrt:fp16; torch: the torch paths given by the "
        "other options (always timed)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=32,
        help="single-stream queries, or images per batch size in offline (default: 32)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="single-stream: the paths take turns query by query, so that on a shared machine "
        "every path sees the same load (compare their ratios, not absolute times)",
    )
    parser.add_argument("--batch-sizes", default="1,4,16", help="offline batch sizes tried (default: 1,4,16)")
    parser.add_argument("--size", type=int, default=None, help="detector input side in pixels (default: 256)")
    parser.add_argument(
        "--case-slices",
        type=int,
        default=100,
        help="slices actually run for the per-case time, scaled to 100 (default: 100)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak for the compute floor (default: from the GPU's name)",
    )
    parser.add_argument("--json", type=Path, dest="json_out", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite:///<working dir>/mlflow.db")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.set_defaults(handler=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    """Parse the options into a `BenchRequest` and run it (`harness.bench.command.run_benchmark`)."""
    from rich.console import Console

    from harness.bench.command import BenchRequest, run_benchmark
    from harness.engines import engine_paths, require
    from harness.inference import InferenceOptions, parse_paths

    if args.queries < 1 or not 1 <= args.case_slices <= 100:
        raise ValueError("--queries must be >= 1 and --case-slices between 1 and 100")
    fast = InferenceOptions(
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        amp_scope=args.amp_scope,
        fuse=args.fuse,
        uint8=args.uint8,
        cuda_graphs=args.cuda_graphs,
    )
    engines = dict.fromkeys(args.engines)
    labels = args.paths + [label for engine in engines for label in engine_paths(engine, args.device)]
    paths = [fast] + [parse_paths(text, device=args.device) for text in labels]
    for engine in dict.fromkeys(p.engine for p in paths if p.engine != "torch"):
        require(engine)  # a missing engine is an error now, not after the first model's timings
    request = BenchRequest(
        models=args.models or [],
        checkpoints=args.checkpoints,
        paths=paths,
        scenario=args.scenario,
        queries=args.queries,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",") if b.strip()],
        image_size=args.size,
        case_slices=args.case_slices,
        threads=args.threads,
        peak_tflops=args.peak_tflops,
        interleave=args.interleave,
        json_out=args.json_out,
        tracking_uri=None if args.no_mlflow else args.tracking_uri or "",
    )
    run_benchmark(request, Console())
    return 0
