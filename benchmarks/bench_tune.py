"""What ``deployres tune`` picks, against an exhaustive sweep of the same space and against the default. (Not a test.)

ResNet-50 (BatchNorm statistics re-estimated on real photos, as ``deployres run`` does) at ``--input-size``, on this
CPU, served through the tritonserver nvidia-pytriton bundles at ``--concurrency`` closed-loop clients:

  tune      ``deploy_res.tune.tune`` with ``--p99-ms`` at ``--concurrency``, harness ``triton``: its chosen point and
            its wall time (export, builds and validation included).
  sweep     every serving configuration of :func:`deploy_res.tune.space.exhaustive` (with streams for OpenVINO)
            for every engine the tune validated as PASS (same engines, same harness, same seconds per point, each
            served longer while its p99 budget is undecided, as the tune does: ``deploy_res.tune.judge.serve_longer``);
            its best point meeting the budget, judged the same way. Its time = the tune's engine phase (export, build, validate: a sweep needs
            them too) + the time its points took.
  default   ``deployres run --int8``'s engine (INT8, ``--backend auto``) served with ``deployres triton``'s
            defaults (1 instance on every core, max batch = the top of the batch range, no queue delay).

The three are then measured again ``--rounds`` times (more, up to 8, while one's p99 budget is undecided),
alternating (tune, sweep, default, tune, ...), in one server, each model loaded alone, and the ratios come from those side-by-side runs, not from the search's own
figures; ``--cross-check`` also measures each alone in a fresh process and server.

    python benchmarks/bench_tune.py [--input-size 3,224,224] [--p99-ms 200] [--concurrency 8] [--seconds 3]
        [--precision fp32,int8,bf16] [--backend onnxruntime,openvino] [--rounds 2] [--cross-check] [--workdir DIR]

Results: ``benchmarks/results/bench_tune_<isa>.md``; the README's "Tune" section quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "resnet50"
MAX_ROUNDS = 8
"""Side-by-side rounds go on past ``--rounds`` (up to this many) while a contender's p99 budget is undecided."""


def prepare(work: Path, input_size: tuple[int, int, int]) -> tuple[Path, Path, Path]:
    """The photo-BN checkpoint, 256 held-out photo crops (validation, requests) and 128 calibration crops."""
    from deploy_res.data.photos import sample_inputs
    from deploy_res.demo import bn_recalibrated_checkpoint
    from deploy_res.models import Preprocessing
    from deploy_res.models.registry import get_spec

    weights = work / "weights" / f"{MODEL}.bn-photos.pth"
    if not weights.is_file():
        weights = bn_recalibrated_checkpoint(MODEL, work / "weights", input_size=input_size)
    base = get_spec(MODEL).preprocessing
    pre = Preprocessing(input_size, base.mean, base.std, base.crop_pct, base.interpolation)
    data, calib = work / "photos.npz", work / "calib.npz"
    if not data.is_file():
        np.savez(data, inputs=sample_inputs(256, pre, seed=7))
        np.savez(calib, inputs=sample_inputs(128, pre, seed=0))
    return weights, data, calib


def judged(engine: str, serving, runs: list[dict], p99_ms: float) -> dict:
    from deploy_res.tune import judge

    latencies = [t for run in runs for t in run["latencies_ms"]]
    point = {"engine": engine, "key": serving.key, "serving": serving.to_dict(), "throughput": float(np.mean([r["throughput"] for r in runs])),
             "errors": sum(r["errors"] for r in runs), **judge.latency_figures(latencies)}
    point["judgement"] = judge.judge(point, p99_ms, None)
    return point


def request(data: Path, engine: Path) -> dict[str, np.ndarray]:
    from deploy_res.engines import load_engine

    runner = load_engine(engine)
    name = runner.inputs[0].name
    runner.close()
    return {name: np.ascontiguousarray(np.load(data)["inputs"][:1], dtype=np.float32)}


def serving_of(point: dict):
    from deploy_res.tune.space import Serving

    s = point["serving"]
    return Serving(s["instances"], s["threads"], s["max_batch"], s["queue_delay_us"], s.get("streams", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", default="3,224,224")
    parser.add_argument("--p99-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--precision", default="")
    parser.add_argument("--backend", default="")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cross-check", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("bench-tune"))
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)  # cross-check child: ENGINE|SERVING-JSON
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = args.workdir.resolve()
    if args.measure_one:
        engine, serving = args.measure_one.split("|", 1)
        print(json.dumps(measure_alone(Path(engine), json.loads(serving), work, cores, args)))
        return
    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.core.manifest import read_manifest
    from deploy_res.core.names import served_name
    from deploy_res.export import ExportSettings
    from deploy_res.tune import BudgetNotMet, TuneSettings, tune
    from deploy_res.tune.judge import serve_longer, undecided
    from deploy_res.tune.measure import TritonHarness
    from deploy_res.tune.space import Serving, exhaustive
    from deploy_res.validation import ValidateSettings, validate

    size = tuple(int(v) for v in args.input_size.split(","))
    work.mkdir(parents=True, exist_ok=True)
    weights, data, calib = prepare(work, size)
    names = lambda text: tuple(t for t in text.split(",") if t)  # noqa: E731
    settings = TuneSettings(data=data, calib_data=calib, p99_ms=args.p99_ms, concurrency=args.concurrency, seconds=args.seconds,
                            precisions=names(args.precision), backends=names(args.backend))
    marks: dict[str, float] = {}
    shutil.rmtree(work / "tune", ignore_errors=True)  # the tune's wall time is a fresh search's: nothing resumed or reused
    start = time.perf_counter()

    def step(message: str) -> None:
        if "serving" in message:
            marks.setdefault("serving", time.perf_counter())
        print(f"  tune: {message}", flush=True)

    try:
        result = tune(MODEL, work / "tune", settings, export_settings=ExportSettings(weights=weights, exporter="torchscript", input_size=size),
                      harness="triton", step=step)
    except BudgetNotMet as exc:
        raise SystemExit(f"tune found nothing to compare: {exc}")
    tune_s = time.perf_counter() - start
    engines_s = marks.get("serving", time.perf_counter()) - start
    report = result.report
    chosen = report["chosen"]
    print(f"tune: {tune_s:.0f} s ({engines_s:.0f} s export/build/validate); chosen {chosen['engine']} {chosen['key']}", flush=True)

    passing = {e["name"]: e for e in report["engines"] if e["outcome"] == "pass"}
    any_engine = Path(next(iter(passing.values()))["path"])
    inputs = request(data, any_engine)
    harness = TritonHarness(work / "serve", cores)
    sweep_start = time.perf_counter()
    swept = []
    try:
        for name, entry in passing.items():
            top = entry.get("top_batch") or 16
            served = served_name(entry["path"], entry["backend"], entry["precision"])
            for serving in exhaustive(cores, top, streams=entry["backend"] == "openvino"):
                runs = [harness.measure(Path(entry["path"]), served, serving, inputs, args.concurrency, args.seconds)]
                point = judged(name, serving, runs, args.p99_ms)
                while undecided(point):  # served longer while its p99 budget is undecided, as the tune serves its points
                    longer, _why_not = serve_longer(point, runs, args.p99_ms, args.seconds, settings.max_point_seconds)
                    if not longer:
                        break
                    runs.append(harness.measure(Path(entry["path"]), served, serving, inputs, args.concurrency, longer))
                    point = judged(name, serving, runs, args.p99_ms)
                swept.append(point)
                print(f"  sweep: {name} {serving.key}: {swept[-1]['throughput']:.1f} img/s, p99 {swept[-1]['p99_ms']:.1f} ms", flush=True)
        sweep_s = time.perf_counter() - sweep_start + engines_s

        default_dir = work / "default"
        exported = json.loads((work / "tune" / "tune.state.json").read_text())["export"]
        final, reference = Path(exported["final"]), Path(exported["onnx"])
        built = default_dir / "engine.txt"  # the engine run --int8 would build, once per workdir
        if not built.is_file():
            engine = build_engine(final, default_dir, BuildSettings(precision="int8", backend="auto", calib_data=calib), quiet=True).engine
            built.write_text(str(engine))
        default_engine = Path(built.read_text())
        verdict = validate(default_engine, ValidateSettings(reference=str(reference), data=str(data), samples=128))  # as run does
        print(f"default engine {default_engine.name}: {verdict['verdict']}", flush=True)
        top = int((read_manifest(default_engine).get("batch_range") or {}).get("max") or 1)
        default = {"engine": f"default ({default_engine.name}, {verdict['outcome'].upper()})", "path": str(default_engine),
                   "serving": Serving(1, cores, top, 0), "force": verdict["outcome"] != "pass"}
        meeting = [p for p in swept if p["judgement"]["meets"]]
        best = max(meeting, key=lambda p: p["throughput"]) if meeting else None
        contenders = {"tune": {"engine": chosen["engine"], "path": chosen["engine_path"], "serving": serving_of(chosen)}, "default": default}
        if best:
            contenders["sweep"] = {"engine": best["engine"], "path": passing[best["engine"]]["path"], "serving": serving_of(best)}
        side: dict[str, list[dict]] = {label: [] for label in contenders}
        rounds = 0
        while rounds < args.rounds or (rounds < MAX_ROUNDS and any(
                undecided(judged(contenders[label]["engine"], contenders[label]["serving"], runs, args.p99_ms)) for label, runs in side.items())):
            rounds += 1
            for label, c in contenders.items():
                path = Path(c["path"])
                manifest = read_manifest(path) or {}
                backend, precision = (manifest.get("engine") or {}).get("backend", "onnxruntime"), manifest.get("precision", "int8")
                side[label].append(harness.measure(path, served_name(path, backend, precision), c["serving"], inputs, args.concurrency, args.seconds,
                                                   force=c.get("force", False)))
    finally:
        harness.close()
    figures = {label: judged(contenders[label]["engine"], contenders[label]["serving"], runs, args.p99_ms) for label, runs in side.items()}
    alone = {}
    if args.cross_check:
        for label, c in contenders.items():
            out = subprocess.run([sys.executable, __file__, "--workdir", str(work), "--concurrency", str(args.concurrency), "--seconds",
                                  str(args.seconds), "--p99-ms", str(args.p99_ms),
                                  "--measure-one", f"{c['path']}|{json.dumps({**c['serving'].to_dict(), 'force': c.get('force', False)})}"], capture_output=True, text=True, check=True)
            alone[label] = json.loads(out.stdout.strip().splitlines()[-1])
    write(work, args, cores, tune_s, engines_s, sweep_s, len(swept), report, best, figures, alone, contenders, rounds)


def measure_alone(engine: Path, serving: dict, work: Path, cores: int, args) -> dict:
    from deploy_res.core.manifest import read_manifest
    from deploy_res.core.names import served_name
    from deploy_res.tune.measure import TritonHarness

    s = serving_of({"serving": serving})
    manifest = read_manifest(engine) or {}
    harness = TritonHarness(work / "serve-alone", cores)
    try:
        run = harness.measure(engine, served_name(engine, (manifest.get("engine") or {}).get("backend", "x"), manifest.get("precision", "x")), s,
                              request(work / "photos.npz", engine), args.concurrency, args.seconds, force=serving.get("force", False))
    finally:
        harness.close()
    point = judged(str(engine), s, [run], args.p99_ms)
    return {"throughput": point["throughput"], "p99_ms": point["p99_ms"]}


def meets(point: dict) -> str:
    """``yes``, ``no``, or ``undecided (N requests)`` for a point's p99 budget."""
    from deploy_res.tune.judge import undecided

    if point["judgement"]["meets"]:
        return "yes"
    return f"undecided ({point['requests']} requests)" if undecided(point) else "no"


def write(work, args, cores, tune_s, engines_s, sweep_s, swept, report, best, figures, alone, contenders, rounds) -> None:
    from bench_cpu_backends import isa_name  # the ISA tag every results file is named by
    from deploy_res.serve.triton_settings import in_streams
    from deploy_res.engines.onnxruntime.backend import cpu_fingerprint

    cpu = cpu_fingerprint()
    tune_fig, default_fig, sweep_fig = figures["tune"], figures["default"], figures.get("sweep")
    lines = [f"# bench_tune on {cpu.get('model') or cpu.get('cpu')} ({isa_name()}), {cores} cores", "",
             f"`python benchmarks/bench_tune.py --input-size {args.input_size} --p99-ms {args.p99_ms:g} --concurrency {args.concurrency} "
             f"--seconds {args.seconds:g} --precision {args.precision or 'default'} --backend {args.backend or 'default'} --rounds {args.rounds}"
             f"{' --cross-check' if args.cross_check else ''}`, {time.strftime('%Y-%m-%d')}; {MODEL} with photo BN statistics, "
             f"served by the bundled tritonserver (Python backend) at {args.concurrency} clients, one sample per request.", "",
             "## Engines the tune judged", "", "| engine | verdict | line |", "|---|---|---|"]
    lines += [f"| {e['name']} | {e['outcome'].upper()} | {e['verdict']} |" for e in report["engines"]]
    lines += ["", f"## Side by side ({rounds} alternating runs each, {args.seconds:g} s per run)", "",
              "| | engine | serving | img/s | p99 ms [95 %] | meets p99 budget |" + (" alone: img/s | alone: p99 ms |" if alone else ""),
              "|---|---|---|---|---|---|" + ("---|---|" if alone else "")]
    for label, fig in figures.items():
        s = contenders[label]["serving"]
        low, high = fig["p99_interval_ms"]
        row = (f"| {label} | {contenders[label]['engine']} | {s.instances} x {s.threads}{in_streams(s.streams)}, max batch {s.max_batch}, delay {s.queue_delay_us} us | "
               f"{fig['throughput']:.1f} | {fig['p99_ms']:.1f} [{low:.1f}, {'-' if high is None else f'{high:.1f}'}] | "
               f"{meets(fig)} |")
        if alone:
            row += f" {alone[label]['throughput']:.1f} | {alone[label]['p99_ms']:.1f} |"
        lines.append(row)
    lines += ["", "## Ratios", ""]
    if sweep_fig:
        lines.append(f"- tune / sweep's best throughput: **{tune_fig['throughput'] / sweep_fig['throughput']:.3f}** (target >= 0.95)")
    else:
        lines.append("- the sweep found no point meeting the budget")
    lines += [f"- tune / default throughput: **{tune_fig['throughput'] / default_fig['throughput']:.3f}**",
              f"- tune wall time {tune_s:.0f} s ({engines_s:.0f} s export, builds and validation; {report['measured_total']} points measured) "
              f"vs the sweep's {sweep_s:.0f} s ({engines_s:.0f} s + {swept} points): **{tune_s / sweep_s:.2f}** of it (target <= 0.33)",
              f"- the tune's chosen point meets the p99 budget in the side-by-side runs: {meets(tune_fig).upper()}"]
    if best:
        lines.append(f"- the sweep's best during the sweep: {best['engine']} {best['key']}, {best['throughput']:.1f} img/s, p99 {best['p99_ms']:.1f} ms")
    text = "\n".join(lines) + "\n"
    target = Path(__file__).resolve().parent / "results" / f"bench_tune_{isa_name()}.md"
    target.write_text(text)
    print(text)
    print(f"written: {target}")


if __name__ == "__main__":
    main()
