"""CI latency gate: a quick pass that fails when a fast inference path or an inference engine is slower than eager
fp32 measured in the same run, or fails its equality check, or when the harness's own overhead is not negligible
next to one classifier inference.

    python benchmarks/gate.py [--rounds 7] [--margin 0.10] [--overhead-share 0.01] [--json OUT]

Rules (no absolute times: CI machines are shared):
1. Every gated fast path must first give the same outputs as eager fp32 (`harness.inference.check_equal`).
2. Its median latency, with the paths taking turns round by round (`harness.bench.scenarios.interleaved`, so a
   load change hits all alike), must not exceed eager fp32's median by more than ``--margin`` (default 10%).
3. The null backend's median per-query cost must stay under ``--overhead-share`` (default 1%) of the classifier's
   eager batch-1 median.

Gated paths, on the CPU: the classifier (wu2020, batch 16) on channels_last, bf16 and bf16 + channels_last (bf16
only where the CPU has native bf16), and on the engines installed: onnxruntime:fp32, openvino:fp32 and openvino:bf16
(`harness.engines`); the detector (fasterrcnn_vgg16 at 128 px, batch 1) on channels_last, on bf16 in the box head
only (``bf16@box_head``) and on onnxruntime:fp32 and openvino:fp32. The detector's all-bf16 paths (torch's and
openvino:bf16) are reported, not gated: with random weights
its detections are decided by near ties that reduced precision flips, so it does not pass the equality check
(see docs/benchmarks.md). Exit status 0: pass; 1: a rule failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def _paths(device: str, bf16: bool):
    from harness.engines import engine_installed
    from harness.inference import InferenceOptions

    classifier = [InferenceOptions(device=device, channels_last=True, batch=16)]
    if bf16:
        bf16_paths = [{}, {"channels_last": True}, {"channels_last": True, "fuse": True}]
        classifier += [InferenceOptions(device=device, dtype="bf16", batch=16, **flags) for flags in bf16_paths]
    detector = [InferenceOptions(device=device, channels_last=True)]
    if bf16:
        detector.append(InferenceOptions(device=device, dtype="bf16", amp_scope="box_head"))
    informational = [InferenceOptions(device=device, dtype="bf16", channels_last=True)] if bf16 else []
    if not device.startswith("cuda"):  # the CPU engines that are installed (CI installs both)
        engines = [e for e in ("onnxruntime", "openvino") if engine_installed(e)]
        classifier += [InferenceOptions(device=device, engine=e, batch=16) for e in engines]
        detector += [InferenceOptions(device=device, engine=e) for e in engines]
        if bf16 and "openvino" in engines:
            classifier.append(InferenceOptions(device=device, engine="openvino", dtype="bf16", batch=16))
            informational.append(InferenceOptions(device=device, engine="openvino", dtype="bf16"))
    return {"wu2020": (classifier, []), "fasterrcnn_vgg16": (detector, informational)}


def gate(rounds: int, margin: float, overhead_share: float, detector_size: int, device: str) -> dict:
    """Measure and judge; returns the report (``passed`` and one entry per check)."""
    from harness.bench.run import checked_backends
    from harness.bench.scenarios import CLASSIFIER_SIZE, ModelBackend, NullBackend, interleaved, load_samples
    from harness.engines import engine_installed

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import cpu_has_bf16

    bf16 = device.startswith("cuda") or cpu_has_bf16()
    checks, classifier_eager_s = [], None
    if not device.startswith("cuda"):  # the CPU engines are part of the set-up: a missing one fails, not skips
        for engine in ("onnxruntime", "openvino"):
            installed = engine_installed(engine)
            detail = "installed" if installed else "not installed: pip install -e '.[onnx,openvino]'"
            checks.append(
                {"check": "engine", "model": "-", "path": engine, "gated": True, "passed": installed, "detail": detail}
            )
    for name, (gated, informational) in _paths(device, bf16).items():
        task_size = CLASSIFIER_SIZE if name == "wu2020" else detector_size
        samples = load_samples("classification" if name == "wu2020" else "detection", image_size=task_size)
        batch = gated[0].batch
        backends, labels = [], []
        for options, backend, report in checked_backends(
            name, [gated[0].baseline(), *gated, *informational], samples, task_size
        ):
            if backends:  # not the reference
                is_gated = options in gated
                checks.append(
                    {
                        "check": "equal",
                        "model": name,
                        "path": options.label,
                        "gated": is_gated,
                        "passed": report.ok or not is_gated,
                        "detail": report.detail,
                    }
                )
            if report.ok:
                backends.append(backend)
                labels.append(options.label)
        eager = backends[0]
        latencies = interleaved(backends, samples, batch=batch, rounds=rounds)
        medians = [statistics.median(values) for values in latencies]
        for label, median in zip(labels[1:], medians[1:], strict=True):
            is_gated = any(o.label == label for o in gated)
            ratio = median / medians[0]
            checks.append(
                {
                    "check": "not slower",
                    "model": name,
                    "path": label,
                    "gated": is_gated,
                    "batch": batch,
                    "eager_ms": 1e3 * medians[0],
                    "path_ms": 1e3 * median,
                    "speedup": 1 / ratio,
                    "passed": ratio <= 1 + margin or not is_gated,
                    "detail": f"median {1e3 * median:.1f} ms vs eager {1e3 * medians[0]:.1f} ms "
                    f"(x{1 / ratio:.2f}; limit: at most {margin:.0%} slower)",
                }
            )
        if name == "wu2020":
            one = ModelBackend(name, gated[0].baseline(), model=eager.model)
            one.load(samples)
            classifier_eager_s = statistics.median(interleaved([one], samples, batch=1, rounds=max(rounds, 10))[0])
    null = statistics.median(interleaved([NullBackend()], samples, batch=1, rounds=200)[0])
    share = null / classifier_eager_s
    checks.append(
        {
            "check": "overhead",
            "model": "null",
            "path": "-",
            "gated": True,
            "null_us": 1e6 * null,
            "classifier_ms": 1e3 * classifier_eager_s,
            "share": share,
            "passed": share <= overhead_share,
            "detail": f"null backend {1e6 * null:.1f} us = {share:.3%} of a wu2020 batch-1 inference "
            f"({1e3 * classifier_eager_s:.2f} ms; limit {overhead_share:.0%})",
        }
    )
    return {
        "passed": all(c["passed"] for c in checks),
        "device": device,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "margin": margin,
        "overhead_share": overhead_share,
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the gate; print one line per check; exit 1 when a gated check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per path (default: 7)")
    parser.add_argument("--margin", type=float, default=0.10, help="allowed slowdown of a fast path (default: 0.10)")
    parser.add_argument(
        "--overhead-share",
        type=float,
        default=0.01,
        help="allowed null-backend share of one classifier inference (default: 0.01)",
    )
    parser.add_argument("--detector-size", type=int, default=128, help="detector input side (default: 128)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine one thread per process times steadier)",
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    report = gate(args.rounds, args.margin, args.overhead_share, args.detector_size, args.device)
    for check in report["checks"]:
        status = "ok  " if check["passed"] else "FAIL"
        gated = "" if check["gated"] else " (not gated)"
        print(f"{status} {check['check']:<10} {check['model']:<17} {check['path']:<26} {check['detail']}{gated}")
    verdict = "passed" if report["passed"] else "FAILED"
    print(f"latency gate {verdict} in {time.perf_counter() - start:.0f} s ({report['threads']} thread(s))")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
