"""GPU check: the measurements a session lent a GPU for a few minutes runs, as one command.

    bash benchmarks/gpu_check.sh [--out DIR] [--budget-s 480] [--device cuda]    on the GPU machine
    bash benchmarks/gpu_check.sh --dry-run --out /tmp/gpu-check                   on a CPU, tiny sizes (CI)

Steps, each in subprocesses with their own timeouts (one failing never stops the others): ``environment`` (versions,
GPU, driver, optional packages), ``gpu-tests`` (the tests that need CUDA), ``bench`` (`harness bench` per model on
the GPU fast paths), ``end-to-end`` (a DICOM study read, preprocessed, run and post-processed: pytest-benchmark),
``packed-trials`` (four sweep trials sharing one GPU against one alone: Ray), ``ddp`` (the harness's data-parallel
training over NCCL). Writes ``gpu_check.json`` (everything, log tails included), ``gpu_check.md`` (tables) and the
bench step's raw JSONs into ``--out``; exit status 0 when no step failed (skips are fine), 1 otherwise.
What each step runs and skips: benchmarks/README.md, "GPU check".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("environment", "gpu-tests", "bench", "end-to-end", "packed-trials", "ddp")
MODULES = (
    "ray",
    "mlflow",
    "pydicom",
    "onnxruntime",
    "openvino",
    "tensorrt",
    "sklearn",
    "pycocotools",
    "psutil",
    "filelock",
    "SimpleITK",
    "highdicom",
    "onnx",
    "pytest_benchmark",
    "triton",
)
# What the steps import beyond torch, torchvision, numpy, scipy, pyyaml, pydantic, rich, matplotlib (found by running
# them with the others hidden): the benchmark inputs are a synthetic DICOM cohort (pydicom); training imports the
# metrics (scikit-learn, pycocotools).
TRAINING = ("pydicom", "sklearn", "pycocotools")
NEEDS = {
    "bench": ("pydicom",),
    "end-to-end": ("pydicom", "pytest_benchmark"),
    "packed-trials": ("ray", "mlflow", *TRAINING),
    "ddp": TRAINING,
}
WHEEL_TOO_BIG = {"ray": "ray's wheel (79 MB) alone is over the 64 MiB that .whl/ may hold"}
CLASSIFIERS = ("wu2020", "wu2020_hybrid")
DETECTORS = ("fasterrcnn_lite_fpn", "fasterrcnn_mobilenet_v3_fpn", "fasterrcnn_resnet50_fpn", "fasterrcnn_vgg16")
GPU_PATHS = {
    "classifier": (
        "bf16",
        "fp16",
        "bf16+channels_last",
        "bf16+cuda_graphs",
        "fp32+uint8",
        "bf16+channels_last+compile",
    ),
    "detector": ("bf16@box_head", "fp16", "bf16+channels_last", "fp32+uint8"),
}
RISKY = ("compile", "cuda_graphs", ":")  # path parts retried without when a model's whole `harness bench` failed
TAIL = 3000  # characters of a command's output kept in gpu_check.json
GPU_REASON = re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE)
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)")


@dataclass
class Check:
    """The run's settings and shared state: where outputs go, the time left, the subprocesses' environment."""

    dry_run: bool
    device: str
    budget_s: float
    out: Path
    work: Path
    env: dict[str, str]
    python: str = sys.executable
    started: float = field(default_factory=time.monotonic)
    modules: dict[str, dict] = field(default_factory=dict)
    cuda: bool = False
    devices: int = 0
    harness_import: str = ""
    cohort_root: Path | None = None
    console: object = None

    def left(self) -> float:
        """Seconds of the budget left."""
        return self.budget_s - (time.monotonic() - self.started)

    def say(self, text: str, style: str = "") -> None:
        """One progress line (no markup: error messages hold brackets)."""
        if self.console is None:
            print(text, flush=True)
        else:
            from rich.text import Text

            self.console.print(Text(text, style=style))


@dataclass
class Ran:
    """A finished command: exit status (None: killed at its timeout), seconds, the tail of its output."""

    rc: int | None
    seconds: float
    tail: str
    command: list[str]

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        """A short reason for a failure: the timeout, a missing module, or the last line of the output."""
        if self.rc is None:
            return f"timed out after {self.seconds:.0f} s"
        missing = re.findall(r"No module named '([\w.]+)'", self.tail)
        if missing:
            return f"exit {self.rc}: missing module {missing[-1]} (ship its wheel in .whl/)"
        lines = [line.strip() for line in self.tail.splitlines() if line.strip()]
        return f"exit {self.rc}: {lines[-1][:300] if lines else 'no output'}"


# ----------------------------------------------------------------------------------------------- subprocesses


def run(check: Check, command: list[str], timeout: float, cwd: Path = ROOT, env: dict | None = None) -> Ran:
    """Run ``command`` with the check's environment, at most ``timeout`` seconds and never past the budget."""
    limit = max(1.0, min(timeout, check.left()))
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env or check.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=limit)
        rc = process.returncode
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        output, _ = process.communicate()
        rc = None
    return Ran(rc, time.monotonic() - start, output[-TAIL:], [str(c) for c in command])


def kill_tree(pid: int) -> None:
    """Kill a command we started, its process group and its descendants (Ray's workers leave the group)."""
    descendants = []
    try:
        import psutil

        descendants = [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except Exception:  # psutil missing, or the process already gone
        pass
    with contextlib.suppress(OSError):  # already gone
        os.killpg(pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)


def harness(check: Check, *args: str) -> list[str]:
    """A ``harness`` command line that works without installing the package (PYTHONPATH holds the repository)."""
    return [check.python, "-m", "harness", *args]


# ----------------------------------------------------------------------------------------------- set-up


def subprocess_env(work: Path) -> dict[str, str]:
    """The environment of every step: the repository importable, a cache folder of our own, no display."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.append(str(ROOT))
    env |= {
        "PYTHONPATH": os.pathsep.join(paths),
        "HARNESS_CACHE_DIR": str(work / "cache"),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    return env


SHIM = '''"""Written by benchmarks/gpu_check.py for a copy of the repository that is not installed: maps
harness.models and harness.datasets to the folders models/ and datasets/, as pyproject.toml's package-dir does, then
runs the sitecustomize this one hides, if any."""
import importlib.machinery
import importlib.util
import os
import sys

FOLDERS = {folders!r}


class HarnessFolders:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = FOLDERS.get(name)
        if folder is None:
            return None
        init = os.path.join(folder, "__init__.py")
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[folder])


sys.meta_path.append(HarnessFolders)
here = os.path.dirname(os.path.abspath(__file__))
others = [p for p in sys.path if os.path.abspath(p or ".") != here]
hidden = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
if hidden is not None and hidden.loader is not None:
    hidden.loader.exec_module(importlib.util.module_from_spec(hidden))
'''


def harness_importable(check: Check) -> bool:
    """Whether ``harness.models`` and ``harness.datasets`` import in a subprocess (an install maps them)."""
    code = "import importlib.util as u; assert u.find_spec('harness.models') and u.find_spec('harness.datasets')"
    probe = subprocess.run([check.python, "-c", code], cwd=ROOT, env=check.env, capture_output=True, timeout=120)
    return probe.returncode == 0


def install_shim(check: Check) -> str:
    """Make ``harness.models`` / ``harness.datasets`` importable in an uninstalled copy (a ``sitecustomize`` on
    PYTHONPATH); returns how harness is imported."""
    if harness_importable(check):
        return "as installed (or mapped by an editable install)"
    folder = check.work / "shim"
    folder.mkdir(parents=True, exist_ok=True)
    folders = {"harness.models": str(ROOT / "models"), "harness.datasets": str(ROOT / "datasets")}
    (folder / "sitecustomize.py").write_text(SHIM.format(folders=folders))
    check.env["PYTHONPATH"] = os.pathsep.join([str(folder), check.env["PYTHONPATH"]])
    if harness_importable(check):
        return "from the repository, harness.models and harness.datasets mapped by the driver's sitecustomize"
    return "NOT importable: harness.models / harness.datasets not found"


def missing(check: Check, step: str) -> str | None:
    """The reason a step cannot run here (packages it needs that do not import, or no CUDA), or None."""
    absent = [m for m in NEEDS.get(step, ()) if not check.modules.get(m, {}).get("ok")]
    if absent:
        notes = "; ".join(WHEEL_TOO_BIG[m] for m in absent if m in WHEEL_TOO_BIG)
        ship = f" ({notes})" if notes else " (ship the wheels in .whl/: benchmarks/README.md, GPU check)"
        return f"needs {', '.join(absent)}, not installed here{ship}"
    if check.device.startswith("cuda") and not check.cuda:
        return "needs CUDA: torch sees no CUDA device"
    return None


# ----------------------------------------------------------------------------------------------- step 1: environment


def probe_environment() -> dict:
    """Run in a subprocess: python, torch, CUDA, the GPU and its driver, and which optional packages import."""
    import platform
    import shutil

    import torch

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count(),
    }
    if info["cuda_available"]:
        info |= {
            "device_name": torch.cuda.get_device_name(0),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "cudnn": torch.backends.cudnn.version(),
        }
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        smi = subprocess.run(query, capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
    info["modules"] = {name: probe_module(name) for name in MODULES}
    return info


def probe_module(name: str) -> dict:
    """Whether a module imports, its version, and onnxruntime's execution providers."""
    import importlib

    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    found = {"ok": True, "version": str(getattr(module, "__version__", "?"))}
    if name == "onnxruntime":
        found["providers"] = list(module.get_available_providers())
    return found


def step_environment(check: Check) -> dict:
    """Step 1: the probe's findings (the later steps skip on what is missing)."""
    found = check.work / "environment.json"
    ran = run(check, [check.python, str(Path(__file__).resolve()), "--probe-env", str(found)], timeout=120)
    if not ran.ok or not found.is_file():
        return {"status": "failed", "reason": ran.why(), "log_tail": ran.tail}
    info = json.loads(found.read_text())
    check.modules, check.cuda, check.devices = info["modules"], info["cuda_available"], info["device_count"]
    info["harness_import"] = check.harness_import
    absent = [name for name, found in check.modules.items() if not found["ok"]]
    info["missing"] = absent
    if check.device.startswith("cuda") and not check.cuda:
        return {"status": "failed", "reason": f"--device {check.device}: torch sees no CUDA device", **info}
    return {"status": "passed", "reason": f"not installed: {', '.join(absent) or 'none'}", **info}


# ----------------------------------------------------------------------------------------------- step 2: gpu-tests


def needs_gpu(item) -> bool:
    """A test that needs CUDA: marked ``gpu``, or skipped without CUDA (a skipif whose reason names CUDA or a GPU)."""
    if item.get_closest_marker("gpu"):
        return True
    return any(GPU_REASON.search(str(mark.kwargs.get("reason", ""))) for mark in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items) -> None:
    """pytest hook, when this file is a plugin (``-p benchmarks.gpu_check``): keep only the tests that need CUDA."""
    deselected = [item for item in items if not needs_gpu(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if needs_gpu(item)]


def gpu_test_files() -> list[str]:
    """The test files that mention a GPU marker or a CUDA skip (collecting only them avoids importing Ray, MLflow)."""
    pattern = re.compile(r"pytest\.mark\.gpu|skipif\(not torch\.cuda\.is_available\(\)")
    files = sorted((ROOT / "tests").rglob("test_*.py"))
    return [str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text(errors="replace"))]


def summary_line(output: str) -> str:
    """pytest's last summary line (``4 passed, 2 skipped, 90 deselected in 9.1s``), without its ``=``."""
    lines = [line.strip("= ") for line in output.splitlines() if COUNTS.search(line) and " in " in line]
    return lines[-1] if lines else ""


def collection_errors(output: str) -> list[str]:
    """``file (the error)`` for each test file pytest could not collect (an import that fails, most often)."""
    errors = []
    for block in re.split(r"_+ ERROR collecting ", output)[1:]:
        file = block.split(" ", 1)[0]
        cause = re.findall(r"^E\s+(.+)$", block, flags=re.MULTILINE)
        errors.append(f"{file} ({cause[-1].strip() if cause else 'see log_tail'})")
    return errors


def step_gpu_tests(check: Check) -> dict:
    """Step 2: the tests that need CUDA (pytest ``-m gpu`` and the CUDA skipifs); the dry run only collects them."""
    files = gpu_test_files()
    command = [check.python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "benchmarks.gpu_check"]
    command += ["--continue-on-collection-errors", "--basetemp", str(check.work / "pytest-gpu-tests"), *files]
    if check.dry_run:
        command.append("--co")
    elif not check.cuda:
        return {"status": "skipped", "reason": "needs CUDA: torch sees no CUDA device", "files": files}
    ran = run(check, command, timeout=150)
    summary = summary_line(ran.tail)
    counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(summary)}
    tests = [line for line in ran.tail.splitlines() if "::" in line and not line.startswith("SKIPPED")]
    skips = [line for line in ran.tail.splitlines() if line.startswith("SKIPPED")]
    record = {"files": files, "counts": counts, "tests": tests if check.dry_run else [], "skips": skips}
    if ran.rc == 5 or (ran.ok and check.dry_run and not tests):
        return {"status": "skipped", "reason": "no test needs CUDA", **record, "log_tail": ran.tail}
    not_collected = collection_errors(ran.tail)
    record["not_collected"] = not_collected
    if not ran.ok:
        reason = "; ".join([summary or ran.why(), *(f"not collected: {e}" for e in not_collected)])
        return {"status": "failed", "reason": reason, **record, "log_tail": ran.tail}
    if check.dry_run:
        reason = f"dry run: {len(tests)} tests that need CUDA collected (--co), not run"
        return {"status": "passed", "reason": reason, **record}
    return {"status": "passed", "reason": summary, **record, "log_tail": ran.tail}


# ----------------------------------------------------------------------------------------------- step 3: bench


def bench_plan(check: Check) -> list[tuple[str, list[str]]]:
    """(model, extra ``harness bench`` arguments) per model: its paths, sizes and queries on this device."""
    if check.dry_run:
        paths = ["bf16", "fp32+uint8"] + [f"{e}:fp32" for e in ("onnxruntime", "openvino") if module_ok(check, e)]
        common = ["--size", "64", "--queries", "3", "--case-slices", "4", *flags("--path", paths)]
        return [("wu2020", common), ("fasterrcnn_lite_fpn", common)]
    engines = []
    if "CUDAExecutionProvider" in check.modules.get("onnxruntime", {}).get("providers", []):
        engines += ["--path", "onnxruntime:fp32"]
    tensorrt = ["--engine", "tensorrt"] if module_ok(check, "tensorrt") else []
    case = ["--case-slices", "100"]
    classifier = ["--queries", "32", *case, *flags("--path", GPU_PATHS["classifier"]), *engines, *tensorrt]
    detector = ["--queries", "16", "--size", "512", *case, *flags("--path", GPU_PATHS["detector"]), *engines]
    return [(m, classifier) for m in CLASSIFIERS] + [(m, detector) for m in DETECTORS]


def flags(option: str, values) -> list[str]:
    """``--path a --path b ...``."""
    return [part for value in values for part in (option, value)]


def module_ok(check: Check, name: str) -> bool:
    return bool(check.modules.get(name, {}).get("ok"))


def without_risky(arguments: list[str]) -> tuple[list[str], list[str]]:
    """The arguments less the paths and engines that may crash a whole run (compile, CUDA graphs, engines)."""
    kept, dropped, pairs = [], [], list(zip(arguments[::2], arguments[1::2], strict=True))
    for option, value in pairs:
        if option in ("--path", "--engine") and (option == "--engine" or any(r in value for r in RISKY)):
            dropped.append(value)
        else:
            kept += [option, value]
    return kept, dropped


def bench_rows(payload: dict) -> list[dict]:
    """One row per model and path of a ``harness bench --json`` file, with the speed-up over eager fp32 (p50)."""
    results = payload.get("results", [])
    reference = {r["model"]: r.get("p50_ms") for r in results if r["path"] == "eager-fp32"}
    keys = ("model", "path", "equal", "equality", "p50_ms", "p99_ms", "images_per_s", "per_case_s", "engine")
    rows = []
    for result in results:
        ref, p50 = reference.get(result["model"]), result.get("p50_ms")
        rows.append({k: result.get(k) for k in keys} | {"speedup": ref / p50 if ref and p50 else None})
    return rows


def bench_command(check: Check, model: str, arguments: list[str], out: Path) -> list[str]:
    """``harness bench`` for one model, single-stream with the paths taking turns, its JSON into ``out``."""
    base = ["bench", "--model", model, "--device", check.device, "--scenario", "single-stream", "--interleave"]
    return harness(check, *base, "--no-mlflow", "--json", str(out), *arguments)


def bench_one(check: Check, model: str, arguments: list[str], timeout: float) -> dict:
    """`harness bench` for one model (its JSON into ``--out``); on a crash or a timeout, once more without the
    risky paths (compile, CUDA graphs, engines) when the budget allows."""
    out = check.out / f"bench-{model}.json"
    out.unlink(missing_ok=True)
    ran = run(check, bench_command(check, model, arguments, out), timeout=timeout)
    record = {"model": model, "seconds": ran.seconds, "json": out.name}
    if not ran.ok:
        record |= {"status": "failed", "error": ran.why(), "log_tail": ran.tail}
        safe, dropped = without_risky(arguments)
        if not dropped or check.left() < (30 if ran.rc is not None else 90):
            return record
        ran = run(check, bench_command(check, model, safe, out), timeout=timeout)
        record |= {"retried_without": dropped, "seconds": record["seconds"] + ran.seconds}
        if not ran.ok:
            return record | {"retry_error": ran.why(), "retry_log_tail": ran.tail}
    if not out.is_file():
        return record | {"status": "failed", "error": f"{out.name} was not written", "log_tail": ran.tail}
    payload = json.loads(out.read_text())
    found = {"rows": bench_rows(payload), "device_name": payload.get("device_name")}
    return {"status": "passed", **record, **found, "harness_overhead": payload.get("harness_overhead")}


def step_bench(check: Check) -> dict:
    """Step 3: ``harness bench`` per model on the device's paths, each checked against eager fp32 before timing."""
    models, rows = [], []
    for model, arguments in bench_plan(check):
        if check.left() < 20:
            models.append({"model": model, "status": "skipped", "reason": "over budget"})
            continue
        timeout = 240 if check.dry_run else (150 if model in CLASSIFIERS else 80)
        record = bench_one(check, model, arguments, timeout)
        check.say(f"  bench {model}: {record['status']} in {record['seconds']:.0f} s {record.get('error', '')}")
        rows += record.pop("rows", [])
        models.append(record)
    if all(m["status"] == "skipped" for m in models):
        return {"status": "skipped", "reason": "over budget before the first model", "models": models}
    failed = [m["model"] for m in models if m["status"] == "failed"]
    unequal = [f"{r['model']} {r['path']}" for r in rows if not r["equal"]]
    skipped = [m["model"] for m in models if m["status"] == "skipped"]
    notes = [f"failed: {', '.join(failed)}" if failed else "", f"over budget: {', '.join(skipped)}" if skipped else ""]
    notes.append(f"not equal to eager fp32, not timed: {', '.join(unequal)}" if unequal else "")
    reason = "; ".join(n for n in notes if n) or f"{len(rows)} paths on {len(models)} models"
    return {"status": "failed" if failed else "passed", "reason": reason, "rows": rows, "models": models}


# ----------------------------------------------------------------------------------------------- step 4: end-to-end


def e2e_rows(payload: dict) -> list[dict]:
    """One row per model and path of pytest-benchmark's JSON: the study's median time (``p50_ms``), its slices/s and
    the time of a 100-slice study at that rate (``per_case_s``); speed-up over eager fp32 on the study's time."""
    rows = []
    for bench in payload.get("benchmarks", []):
        info, stats = bench["extra_info"], bench["stats"]
        rows.append(
            {
                "model": info["model"],
                "path": info["path"],
                "equal": True,  # a fast path that differs from eager fp32 is skipped by the benchmark, not timed
                "p50_ms": 1e3 * stats["median"],  # the whole study (its slices), median of the rounds
                "images_per_s": info.get("images_per_s"),
                "per_case_s": info.get("per_case_s_at_this_rate"),  # a 100-slice study at this rate
                "study_s": stats["median"],
                "slices": info.get("slices"),
                "read": info.get("read"),
            }
        )
    reference = {r["model"]: r["p50_ms"] for r in rows if r["path"] == "eager-fp32"}
    for row in rows:
        ref = reference.get(row["model"])
        row["speedup"] = ref / row["p50_ms"] if ref and row["p50_ms"] else None
    return rows


def step_end_to_end(check: Check) -> dict:
    """Step 4: one T2WI study, DICOM read -> preprocessing -> model -> post-processing (benchmarks/test_latency.py)."""
    out = check.work / "end-to-end.json"
    select = "end_to_end and dicom and not workers"
    command = [check.python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "benchmarks/test_latency.py"]
    command += [
        "--bench-device",
        check.device,
        "--benchmark-json",
        str(out),
        "--basetemp",
        str(check.work / "pytest-e2e"),
    ]
    if check.dry_run:
        select += " and wu2020 and (eager or fast)"
        command += ["--bench-detector-size", "64"]
    ran = run(check, [*command, "-k", select], timeout=240 if check.dry_run else 150)
    skips = [line for line in ran.tail.splitlines() if line.startswith("SKIPPED")]
    if not ran.ok or not out.is_file():
        return {"status": "failed", "reason": ran.why(), "skips": skips, "log_tail": ran.tail}
    rows = e2e_rows(json.loads(out.read_text()))
    reason = f"{len(rows)} cases timed" + (f"; {len(skips)} skipped (see skips)" if skips else "")
    return {"status": "passed", "reason": reason, "rows": rows, "skips": skips, "selected": select}


# ----------------------------------------------------------------------------------------------- the tiny cohort


def cohort(check: Check) -> Path:
    """The synthetic cohort the training steps share (generated once; 2 centres, centre 2 validates)."""
    if check.cohort_root is None:
        root = check.work / "cohort"
        patients = "4" if check.dry_run else "16"
        ran = run(check, harness(check, "synth", str(root), "--patients", patients, "--centers", "2"), timeout=180)
        if not ran.ok:
            raise RuntimeError(f"harness synth: {ran.why()}\n{ran.tail}")
        check.cohort_root = root
    return check.cohort_root


def study(check: Check, name: str, lrs: list[float], resources: dict) -> dict:
    """A study of classifier trials, one per learning rate, on the shared cohort."""
    epochs = 1 if check.dry_run else 2
    return {
        "name": name,
        "task": "classification",
        "model": "wu2020",
        "model_kwargs": {"weights": None, "width": 16 if check.dry_run else 32},
        "data": {"root": str(cohort(check)), "split": {"val_centers": ["2"]}, "crop_size": 32},
        "train": {"stage1_epochs": 0, "stage2_epochs": epochs, "stage2_lr": 1e-3, "batch_size": 16},
        "n_boot": 100,
        "grid": {"train.stage2_lr": lrs},
        "resources": resources,
        "max_failures": 0,
        "device": check.device,
        "seed": 0,
    }


# ----------------------------------------------------------------------------------------------- step 5: packed-trials


def timed_sweep(check: Check, name: str, trials: int, resources: dict, timeout: float) -> Ran:
    """Write a one-study sweep of ``trials`` trials and time ``harness run`` on it (Ray started for it)."""
    import yaml

    lrs = [1e-3, 5e-4, 3e-4, 1e-4, 5e-5, 3e-5, 1e-5, 5e-6][:trials]
    sweep = {"name": name, "storage": str(check.work / "sweeps"), "studies": [study(check, "cls", lrs, resources)]}
    path = check.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    cpus = ["--num-cpus", str(os.cpu_count() or 2)]
    return run(check, harness(check, "run", str(path), "--fresh", *cpus), timeout=timeout, cwd=check.work)


def step_packed_trials(check: Check) -> dict:
    """Step 5: four trials sharing one GPU (``gpus: 0.25``) against one alone (``gpus: 1``): sweep wall times."""
    trials = 4
    if check.dry_run:  # CPU: the same sweeps with the CPU shared (cpus 0.5 each) instead of the GPU
        packed, alone = {"cpus": 0.5}, {"cpus": 1}
    else:
        cpus = max(1, (os.cpu_count() or 4) // 8)
        packed, alone = {"cpus": cpus, "gpus": 1 / trials}, {"cpus": cpus, "gpus": 1}
    one = timed_sweep(check, "gpu-check-alone", 1, alone, timeout=150)
    if not one.ok:
        return {"status": "failed", "reason": f"1 trial alone: {one.why()}", "log_tail": one.tail}
    many = timed_sweep(check, "gpu-check-packed", trials, packed, timeout=240)
    if not many.ok:
        return {"status": "failed", "reason": f"{trials} trials packed: {many.why()}", "log_tail": many.tail}
    many_s, one_s = many.seconds, one.seconds
    ratio = many_s / (trials * one_s)
    reason = f"{trials} packed in {many_s:.0f} s vs 1 alone in {one_s:.0f} s: x{ratio:.2f} of running them one by one"
    numbers = {"trials": trials, "packed_resources": packed, "alone_resources": alone}
    return {"status": "passed", "reason": reason, **numbers, "packed_s": many_s, "alone_s": one_s, "ratio": ratio}


# ----------------------------------------------------------------------------------------------- step 6: ddp


def ddp_worker(config_path: str) -> None:
    """One rank (``RANK``, ``WORLD_SIZE``, ``MASTER_*`` set): the harness's data-parallel training in the process
    group Ray Train's TorchTrainer would set up for it (nccl on CUDA, gloo on the CPU); prints its result as JSON."""
    import torch
    import torch.distributed as dist

    from harness.config import load_config
    from harness.train.distributed import Distributed
    from harness.train.runner import run_training

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    config = load_config(config_path)
    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        start = time.perf_counter()
        result = run_training(config, progress=False, distributed=Distributed(rank, world))
        seconds = time.perf_counter() - start
    finally:
        dist.destroy_process_group()
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    losses = [entry.get("train_loss") for entry in result.history]
    summary = {"rank": rank, "world_size": world, "backend": backend, "train_s": seconds, "epochs": len(losses)}
    summary |= {"train_loss": losses, "val_auc": metrics.get("val_auc")}
    (Path(config_path).parent / f"ddp-rank{rank}.json").write_text(json.dumps(summary))


def free_port() -> int:
    """A free TCP port on the loopback (the process group's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_ddp(check: Check) -> dict:
    """Step 6: one data-parallel training over NCCL (gloo in the dry run): ranks = GPUs, at most 2 (2 on the CPU)."""
    import yaml

    world = min(2, max(1, check.devices)) if check.device.startswith("cuda") else 2
    config = study(check, "ddp", [1e-3], {}) | {"name": "ddp", "output_dir": str(check.work / "ddp-runs")}
    for key in ("grid", "resources", "max_failures"):
        config.pop(key)
    path = check.work / "ddp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = check.env | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world)}
    command = [check.python, str(Path(__file__).resolve()), "--ddp-worker", str(path)]
    start = time.monotonic()
    ranks = run_ranks(check, command, env, world, timeout=240 if check.dry_run else 120)
    seconds = time.monotonic() - start
    failed = sorted((ran.rc is None, index) for index, ran in enumerate(ranks) if not ran.ok)  # a crash first
    if failed:
        index = failed[0][1]
        return {"status": "failed", "reason": f"rank {index}: {ranks[index].why()}", "log_tail": ranks[index].tail}
    main = json.loads((check.work / "ddp-rank0.json").read_text())
    reason = f"{main['backend']}, {world} rank(s), {main['epochs']} epochs in {main['train_s']:.1f} s"
    return {"status": "passed", "reason": reason, **main, "wall_s": seconds}


def run_ranks(check: Check, command: list[str], env: dict, world: int, timeout: float) -> list[Ran]:
    """Run ``world`` ranks of ``command`` at once; when one fails the others are killed (they would wait for it in a
    collective until the process group's timeout). A rank killed so, or at the timeout, has ``rc`` None."""
    limit, start = max(1.0, min(timeout, check.left())), time.monotonic()
    logs = [check.work / f"ddp-rank{index}.log" for index in range(world)]
    processes = []
    for index, log in enumerate(logs):
        with log.open("w") as handle:  # the child keeps its own copy of the descriptor
            rank_env = env | {"RANK": str(index), "LOCAL_RANK": str(index)}
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=rank_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    while time.monotonic() - start < limit and any(p.poll() is None for p in processes):
        if any(p.poll() not in (None, 0) for p in processes):
            break
        time.sleep(0.5)
    killed = [process.poll() is None for process in processes]
    for process, kill in zip(processes, killed, strict=True):
        if kill:
            kill_tree(process.pid)
        process.wait()
    seconds = time.monotonic() - start
    codes = [None if kill else process.returncode for process, kill in zip(processes, killed, strict=True)]
    return [
        Ran(rc, seconds, log.read_text(errors="replace")[-TAIL:], command) for rc, log in zip(codes, logs, strict=True)
    ]


# ----------------------------------------------------------------------------------------------- driver


STEP_FUNCTIONS = {
    "environment": step_environment,
    "gpu-tests": step_gpu_tests,
    "bench": step_bench,
    "end-to-end": step_end_to_end,
    "packed-trials": step_packed_trials,
    "ddp": step_ddp,
}


def run_step(check: Check, name: str) -> dict:
    """Run one step, never raising: over budget or missing packages make it skipped, an exception failed."""
    start = time.monotonic()
    left = check.left()
    if left < 10:
        record = {
            "status": "skipped",
            "reason": f"over budget: {max(left, 0):.0f} s of --budget-s {check.budget_s:.0f} left",
        }
    elif name != "environment" and (why := missing(check, name)):
        record = {"status": "skipped", "reason": why}
    else:
        check.say(f"{name} ...", style="bold")
        try:
            record = STEP_FUNCTIONS[name](check)
        except Exception as exc:
            record = {
                "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}"[:300],
                "log_tail": traceback.format_exc()[-TAIL:],
            }
    record = {"step": name, **record, "seconds": round(time.monotonic() - start, 1)}
    colour = {"passed": "green", "failed": "red", "skipped": "yellow"}[record["status"]]
    check.say(f"{record['status']:<7} {name} ({record['seconds']:.0f} s): {record['reason']}", style=colour)
    return record


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: what CI runs")
    parser.add_argument("--out", type=Path, help="output folder (default: $OUT, else ./gpu-check-out)")
    parser.add_argument("--budget-s", type=float, default=480, help="steps past it are skipped (default: 480)")
    parser.add_argument("--device", help="cuda (default) or cpu (default of --dry-run)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder (cohort, sweeps, logs)")
    parser.add_argument("--probe-env", type=Path, metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_check(args: argparse.Namespace) -> Check:
    """The run's `Check`: output and work folders, device, environment, the harness import shim when needed."""
    out = (args.out or Path(os.environ.get("OUT") or "gpu-check-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    device = args.device or ("cpu" if args.dry_run else "cuda")
    check = Check(args.dry_run, device, args.budget_s, out, work, subprocess_env(work))
    try:
        from rich.console import Console

        check.console = Console(highlight=False, soft_wrap=True)
    except ImportError:
        pass
    check.harness_import = install_shim(check)
    return check


def main(argv: list[str] | None = None) -> int:
    """Run every step, write gpu_check.json and gpu_check.md; 0 when no step failed."""
    args = parse_args(argv)
    if args.probe_env:
        args.probe_env.write_text(json.dumps(probe_environment(), indent=1))
        return 0
    if args.ddp_worker:
        ddp_worker(args.ddp_worker)
        return 0
    check = make_check(args)
    check.say(f"GPU check: device {check.device}, budget {check.budget_s:.0f} s, out {check.out}")
    steps = [run_step(check, name) for name in STEPS]
    report = write_report(check, steps)
    if not args.keep_work:
        import shutil

        shutil.rmtree(check.work, ignore_errors=True)
    check.say(f"GPU check {'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s: {check.out}")
    return 0 if report["passed"] else 1


# ----------------------------------------------------------------------------------------------- the report


def write_report(check: Check, steps: list[dict]) -> dict:
    """``gpu_check.json`` (everything) and ``gpu_check.md`` (tables) in the output folder."""
    report = {
        "dry_run": check.dry_run,
        "device": check.device,
        "budget_s": check.budget_s,
        "seconds": round(time.monotonic() - check.started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "passed": all(step["status"] != "failed" for step in steps),
        "steps": steps,
    }
    (check.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (check.out / "gpu_check.md").write_text(markdown(report))
    return report


ROW_COLUMNS = (
    ("model", "model", "{}"),
    ("path", "path", "{}"),
    ("equal", "equal", "{}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("img/s", "images_per_s", "{:.1f}"),
    ("case s", "per_case_s", "{:.3f}"),
    ("speed-up", "speedup", "x{:.2f}"),
)
SKIP_KEYS = {"step", "status", "reason", "seconds", "rows", "log_tail", "modules", "models", "tests", "skips"}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]


def cell(value, spec: str) -> str:
    """A formatted number, or "-" for a missing one."""
    if value is None:
        return "-"
    return spec.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def step_markdown(step: dict) -> list[str]:
    """A step's section: status and reason, its rows as a table, its other numbers as key / value."""
    lines = [f"## {step['step']}: {step['status']} ({step['seconds']:.0f} s)", "", step["reason"], ""]
    if step.get("rows"):
        rows = [[cell(row.get(key), spec) for _, key, spec in ROW_COLUMNS] for row in step["rows"]]
        lines += table([title for title, _, _ in ROW_COLUMNS], rows) + [""]
    if step.get("modules"):
        found = [
            [n, "yes" if m["ok"] else "no", m.get("version") or m.get("error", "")] for n, m in step["modules"].items()
        ]
        lines += table(["package", "imports", "version / error"], found) + [""]
    scalars = [[key, cell(value, "{:.3g}")] for key, value in step.items() if key not in SKIP_KEYS]
    if scalars:
        lines += table(["", "value"], scalars) + [""]
    return lines


def markdown(report: dict) -> str:
    """The whole report as Markdown: a summary table, then one section per step."""
    kind = "dry run on " if report["dry_run"] else ""
    verdict = "passed" if report["passed"] else "FAILED"
    lines = [f"# GPU check ({kind}{report['device']}): {verdict} in {report['seconds']:.0f} s", ""]
    summary = [[s["step"], s["status"], f"{s['seconds']:.0f}", s["reason"]] for s in report["steps"]]
    lines += table(["step", "status", "s", "reason"], summary) + [""]
    for step in report["steps"]:
        lines += step_markdown(step)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
