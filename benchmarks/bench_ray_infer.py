"""`deployres infer` on a few thousand small images: the single-process loop vs Ray Data with 1 and 2 actors. (Not a test.)

Builds a small engine (default resnet18 at 3x64x64, ONNX Runtime FP32 on the
CPU), writes ``--images`` JPEG crops of scikit-image's photos (72x72), then
times, each on the same files and batches:

  single        ``infer(...)`` in this process (decode, then the engine; ORT's default threads)
  ray x1        ``infer(..., InferSettings(ray=RayOptions(actors=1)))`` on a local cluster of ``--cpus`` CPUs
  ray x2        ``infer(..., InferSettings(ray=RayOptions(actors=2)))`` on the same cluster

The cluster is started once (its start-up time is printed on its own) and
every run includes Ray Data's pipeline start (actors loading the engine).
First the parts are timed alone: decoding + preprocessing every image, and the
engine on the decoded batches with 1 thread and with ORT's default threads.
Printed per run: seconds, images/s, the difference to the single-process loop
per image, ``(t - t_single) / images`` (negative when Ray's overlap of
decoding and inference wins more than Ray costs), and Ray's overhead per
image, ``(t - max(t_decode, t_engine_1_thread)) / images``: the time above a
perfect 1-actor pipeline. Each Ray run's time to its first result (pipeline
and actor start, engine load) is printed apart from its steady rate, which
splits Ray's fixed cost from its cost per image. Every Ray run's Parquet is
checked equal to the single-process one.

    python benchmarks/bench_ray_infer.py [--images 2000] [--cpus 2] [--batch 8] [--model resnet18] [--input-size 3,64,64]

Measured: see README, "Dataset scale with Ray".
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input-size", default="3,64,64")
    args = parser.parse_args()
    # Token auth for the local cluster with a token for this run only (what deployres does); set before Ray is imported.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

    import pyarrow.parquet as pq

    from deploy_res.build import BuildSettings, build_engine
    from deploy_res.data.photos import _save, random_crops
    from deploy_res.export import ExportSettings, export
    from deploy_res.infer import InferSettings, infer
    from deploy_res.scale.options import RayOptions
    from deploy_res.scale.ray_data import ray_session

    size = tuple(int(x) for x in args.input_size.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp)
        exported = export(args.model, root / "model", ExportSettings(input_size=size, exporter="torchscript"))
        engine = build_engine(exported.final_path, root / "model", BuildSettings(backend="onnxruntime")).engine
        photos = root / "photos"
        photos.mkdir()
        for index, crop in enumerate(random_crops(args.images, seed=1, size=size[1] + 8)):
            _save(crop, photos / f"crop_{index:05d}.jpg", "jpg")
        print(f"{args.model} {size}, {args.images} JPEG crops of {size[1] + 8}px, batch {args.batch}, {_cpu_name()}, {os.cpu_count()} CPUs visible")

        # The parts, timed alone: decode + preprocess, and the engine on decoded batches (1 thread, and ORT's default).
        from deploy_res.core.manifest import read_manifest
        from deploy_res.data.images import list_images
        from deploy_res.infer import InferWorker
        from deploy_res.models import Preprocessing
        from deploy_res.scale.work import load_batch, plan_batches

        pre = Preprocessing.from_dict(read_manifest(engine)["preprocessing"])
        start = time.perf_counter()
        decoded = [load_batch(work, pre) for work in plan_batches(args.batch, list_images(photos))]
        t_decode = time.perf_counter() - start
        t_engine = {}
        for threads in (1, None):
            worker = InferWorker(str(engine), threads=threads)
            start = time.perf_counter()
            for arrays, labels, names, _ in decoded:
                worker(arrays, labels, names)
            t_engine[threads] = time.perf_counter() - start
            worker.close()
        del decoded

        rows, starts = [], []
        start = time.perf_counter()
        single = infer(engine, photos, root / "single.parquet", InferSettings(batch=args.batch))
        t_single = time.perf_counter() - start
        rows.append(("single process", t_single, None))
        reference = pq.read_table(root / "single.parquet")

        start = time.perf_counter()
        with ray_session(num_cpus=args.cpus):
            t_cluster = time.perf_counter() - start
            for actors in (1, 2):
                notes, first = [], []

                def progress(done, total):
                    if not first:
                        first.append((time.perf_counter(), done))

                start = time.perf_counter()
                infer(engine, photos, root / f"ray{actors}.parquet", InferSettings(batch=args.batch, ray=RayOptions(actors=actors)), on_note=notes.append, progress=progress)
                seconds = time.perf_counter() - start
                equal = pq.read_table(root / f"ray{actors}.parquet").equals(reference)
                steady = (args.images - first[0][1]) / (start + seconds - first[0][0])
                starts.append((actors, first[0][0] - start, steady))
                rows.append((f"ray x{actors} ({notes[0][5:] if notes else ''})", seconds, equal))

    n = single["images"]
    ms = lambda seconds: 1000 * seconds / n  # noqa: E731
    print(f"parts alone: decode+preprocess {ms(t_decode):.2f} ms/img; engine {ms(t_engine[1]):.2f} ms/img on 1 thread, "
          f"{ms(t_engine[None]):.2f} ms/img on ORT's default threads")
    # A perfect 1-actor pipeline overlaps decoding (1 CPU) with the engine (1 thread): the slower of the two sets the pace.
    ideal = max(t_decode, t_engine[1])
    print(f"local Ray cluster ({args.cpus} CPUs) start-up: {t_cluster:.1f} s (once per command)")
    print(f"{'run':<72} {'s':>6} {'img/s':>7} {'vs single ms/img':>17} {'vs ideal x1 ms/img':>19} {'= single':>9}")
    for label, seconds, equal in rows:
        versus = "" if equal is None else f"{ms(seconds - t_single):+.2f}"
        over_ideal = "" if equal is None else f"{ms(seconds - ideal):+.2f}"
        print(f"{label:<72} {seconds:6.1f} {n / seconds:7.1f} {versus:>17} {over_ideal:>19} {'' if equal is None else str(equal):>9}")
    for actors, to_first, steady in starts:
        print(f"ray x{actors}: {to_first:.1f} s from the call to the first batch's result (pipeline and actor start, engine load), "
              f"then {steady:.1f} img/s = {1000 / steady:.2f} ms/img; over a perfect 1-actor overlap in steady state: "
              f"{1000 / steady - ms(ideal):+.2f} ms/img")
    print("vs single: (t - t_single) / images; vs ideal x1: (t - max(decode, engine on 1 thread)) / images = what Ray's "
          "scheduling, serialisation and actor start cost per image over a perfect 1-actor overlap")


if __name__ == "__main__":
    main()
