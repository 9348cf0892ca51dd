"""The HTML report in a real headless browser (Debian's chromium): it renders, and the plots are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from deploy_res.profiling import build_report
from deploy_res.profiling.layers import breakdown
from deploy_res.profiling.measure import Entry
from deploy_res.reports import write_reports

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """A report from synthetic timings (three artifacts, one not measured, layers, validation): no model run needed."""
    manifest = {"model": {"source": "resnet18", "zoo": True}, "input": {"name": "input", "shape": ["batch", 3, 64, 64]},
                "preprocessing": {"input_size": [3, 64, 64]}}
    layers = [("/conv1/Conv", "Conv", 0.4), ("/layer1/layer1.0/conv1/Conv", "Conv", 0.9), ("/layer2/layer2.0/conv2/Conv", "Conv", 0.7),
              ("/layer3/layer3.1/relu_1/Relu_output_0_nchwc", "Conv", 1.1), ("/layer4/layer4.0/conv1/Conv", "Conv", 1.5),
              ("/fc/Gemm", "Gemm", 0.1), ("ReorderOutput", "ReorderOutput", 0.05)]
    entries = []
    for index, (label, scale) in enumerate([("resnet18.fp32.cpu.ort.onnx", 1.0), ("resnet18.int8.cpu.ort.onnx", 0.55)]):
        entry = Entry(label=label, kind="artifact", path=f"/x/{label}",
                      info={"backend": "onnxruntime", "device": "cpu", "load_seconds": 0.4, "first_run_ms": {1: 9.0, 8: 30.0},
                            "memory": {"rss_before_mb": 300.0, "load_peak_rss_mb": 420.0, "rss_after_load_mb": 380.0, "peak_is_per_artifact": True},
                            "layers": {"source": "onnxruntime profiler", "note": "synthetic", "trace": None,
                                       "batches": [{"batch": b, **breakdown([(n, o, ms * scale * b ** 0.8) for n, o, ms in layers], 1)} for b in (1, 8)]}})
        for b in (1, 8):
            base = 4.8 * scale * b ** 0.8
            entry.samples[b] = [base * (1 + 0.02 * ((i * 37) % 11) + (0.3 if i % 29 == 0 else 0)) for i in range(120)]
        entries.append(entry)
    entries.append(Entry(label="resnet18.fp16.plan", kind="artifact", path="/x/resnet18.fp16.plan", error="TensorRT cannot run here: no CUDA GPU"))
    eager = Entry(label="torch eager", kind="torch", info={"backend": "torch", "device": "cpu", "mode": "eager"})
    eager.samples = {1: [14.0 + 0.1 * (i % 7) for i in range(60)], 8: [60.0 + 0.5 * (i % 5) for i in range(60)]}
    entries.append(eager)
    validation = [{"artifact": "/x/resnet18.fp32.cpu.ort.onnx", "precision": "fp32", "metrics": {"top1_agreement": 1.0}},
                  {"artifact": "/x/resnet18.int8.cpu.ort.onnx", "precision": "int8", "metrics": {"top1_agreement": 0.991}}]
    report = build_report(entries, {e.label: manifest for e in entries}, batches=(1, 8), warmup_s=1.0, duration_s=5.0, iterations=None,
                          threads=None, torch_modes=("eager",), layer_iterations=10, status="complete", validation_results=validation, seconds=42)
    folder = tmp_path_factory.mktemp("html")
    return write_reports(report, folder)["html"]


def _chromium(*args, tmp_path: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True, text=True, timeout=timeout)


def test_the_report_is_self_contained(report_html):
    text = report_html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the report must not load anything from the network"
    assert "<script" not in text


def test_screenshot_is_written_and_not_blank(report_html, tmp_path):
    png = tmp_path / "report.png"
    result = _chromium(f"--screenshot={png}", "--window-size=1280,2000", report_html.resolve().as_uri(), tmp_path=tmp_path)
    assert png.is_file() and png.stat().st_size > 10_000, result.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 2000)
        colors = image.convert("RGB").resize((128, 200)).getcolors(maxcolors=1 << 16)
    assert colors is not None and len(colors) > 20, "the screenshot is (nearly) one colour"
    assert zlib.crc32(png.read_bytes()) != 0


def test_dom_holds_the_plots_and_the_summary(report_html, tmp_path):
    result = _chromium("--dump-dom", report_html.resolve().as_uri(), tmp_path=tmp_path)
    dom = result.stdout
    assert dom.count("<svg") >= 6, result.stderr[-2000:]
    for label in ("latency distribution at batch 1", "latency distribution at batch 8", "throughput against batch size",
                  "time by network stage", "top layers of resnet18.int8.cpu.ort.onnx", "accuracy against latency"):
        assert f'aria-label="{label}"' in dom
    assert "not measured: TensorRT cannot run here" in dom
    assert "<h2>Summary</h2>" in dom
