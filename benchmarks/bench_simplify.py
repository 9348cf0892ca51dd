"""deployres optimize vs onnxsim / onnxslim: node count, exactness and time on the same files. (Not a test.)

Files:

- ``foreign``: the tf2onnx-looking ResNet of tests/support/foreign_models.py
  at 224x224 (NHWC input, BatchNorm as Sub/Mul/Add, no-op Casts, padding
  computed at run time, duplicated and cancelling Transposes);
- ``resnet18`` / ``resnet50``: TorchScript exports of the zoo models with
  BatchNorm kept (random BN statistics), dynamic batch.

Each tool runs on each file ``--repeats`` times, interleaved round by round
(order rotated), timed in wall-clock and process CPU seconds (CPU time is
the steadier one on a shared machine). deployres runs its ``onnxruntime``
target, every pass checked numerically. Exactness: max |tool - raw| over
the logits on fresh inputs at batch 3, relative to the largest logit.

Usage:

    python benchmarks/bench_simplify.py --files foreign resnet18 --repeats 5
    python benchmarks/bench_simplify.py --files resnet50 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))


def make_file(name: str, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    if name == "foreign":
        import onnx
        from foreign_models import foreign_resnet

        onnx.save(foreign_resnet(size=224, width=64, blocks=8, classes=1000), str(path))
        return path
    import torch

    from deploy_res.exporters.torch_export import export_onnx
    from deploy_res.models import create_model

    torch.manual_seed(0)
    net = create_model(name).eval()
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(net, path, (3, 224, 224), exporter="torchscript")
    return path


def tools() -> dict:
    import onnx

    from deploy_res.exporters.pass_runner import optimize

    found = {"deployres": lambda path: optimize(str(path), target="onnxruntime")[0]}
    try:
        import onnxsim

        found["onnxsim"] = lambda path: onnxsim.simplify(onnx.load(str(path)))[0]
    except ImportError:
        pass
    try:
        import onnxslim

        found["onnxslim"] = lambda path: onnxslim.slim(onnx.load(str(path)))
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=["foreign", "resnet18"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnx

    from deploy_res.exporters.checks import compare_outputs, make_inputs, run_ort

    runners = tools()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.files:
            path = make_file(name, Path(tmp))
            raw = onnx.load(str(path))
            feeds = make_inputs(raw, batch=3, seed=99)
            reference = run_ort(raw, feeds)
            times = {tool: {"wall": [], "cpu": []} for tool in runners}
            outputs = {}
            for tool in runners:  # warm-up (imports, first ORT session), not timed
                outputs[tool] = runners[tool](path)
            order = list(runners)
            for round_ in range(args.repeats):
                for tool in order[round_ % len(order) :] + order[: round_ % len(order)]:
                    wall, cpu = time.perf_counter(), time.process_time()
                    runners[tool](path)
                    times[tool]["wall"].append(time.perf_counter() - wall)
                    times[tool]["cpu"].append(time.process_time() - cpu)
            for tool, model in outputs.items():
                check = compare_outputs(reference, run_ort(model, feeds), rtol=1e-4)
                row = {
                    "file": name,
                    "tool": tool,
                    "nodes_before": len(raw.graph.node),
                    "nodes_after": len(model.graph.node),
                    "max_rel_error": check["max_rel_error"],
                    "wall_s_median": round(statistics.median(times[tool]["wall"]), 3),
                    "cpu_s_median": round(statistics.median(times[tool]["cpu"]), 3),
                }
                results.append(row)
                print(
                    f"{name:10s} {tool:10s} nodes {row['nodes_before']:4d} -> {row['nodes_after']:4d}  "
                    f"max rel err {row['max_rel_error']:.1e}  wall {row['wall_s_median']:.2f} s  cpu {row['cpu_s_median']:.2f} s",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
