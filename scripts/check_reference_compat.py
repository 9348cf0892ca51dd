#!/usr/bin/env python
"""By-hand check: our zoo models are drop-in for their torchvision / timm references.

Not run by CI and not a dependency of the package: it needs torchvision and timm,
which deployres does not install. Run it in a scratch environment, e.g.::

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch torchvision timm
    PYTHONPATH=. /tmp/ref/bin/python scripts/check_reference_compat.py [--models resnet50 ...]

For every registered model whose ``reference`` is ``torchvision`` or ``timm`` it
builds the reference model (random init, nothing downloaded), randomises the
reference's BN affine parameters and running statistics (so that zero-init
residual BNs or default running stats cannot hide a wrong eps or a missing
branch), compares state-dict keys and shapes with ours, loads the reference
state dict into ours with ``strict=True``, runs the same random input at the
registry's ``input_size`` through both in eval mode (float64 by default) and
reports the max abs difference of the logits, failing above ``rtol * max|logit|``.
Sensitivity, checked by hand: Inception-ResNet-v2 with BN eps 1e-5 instead of
1e-3 differs by 3e-4 relative, with the B-block scale 0.1001 instead of 0.10 by
4e-5 relative; both FAIL (the real comparisons below differ by exactly 0).

It also compares our registry preprocessing with the reference's default config
(timm ``pretrained_cfg``; torchvision's ``IMAGENET1K_V1`` transforms, the classic
recipe our registry follows, noting where the ``DEFAULT`` weights use another). Exit status 1 if any model
mismatches in keys, shapes, strict loading or outputs.

Measured on 2026-11-27 in a scratch venv (torch 2.14.1, torchvision 0.29.1, timm 1.0.31,
CPU, defaults: float64, batch 2, seed 0; 3.5 min on 2 cores). Every reference loads
strictly and gives bit-identical logits (``--dtype float32``: all diffs 0 as well). The
seresnet50 line is informational: timm's current default tag (a1_in1k) uses
crop_pct 0.95, ours follows ra2_in1k (0.875)::

    torch 2.14.1+cu130, torchvision 0.29.1+cu130, timm 1.0.31; float64 CPU, batch 2, seed 0, rtol 1e-09
    SKIP plain18              reference: He et al. 2016 (no torchvision equivalent)
    SKIP plain34              reference: He et al. 2016 (no torchvision equivalent)
    OK   resnet18             torchvision keys: 122 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.41, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1
    OK   resnet34             torchvision keys: 218 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.823, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1
    OK   resnet50             torchvision keys: 320 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.441, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   resnet101            torchvision keys: 626 keys equal; load: strict ok; max abs diff 0 (max |logit| 1.04, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   resnet152            torchvision keys: 932 keys equal; load: strict ok; max abs diff 0 (max |logit| 1.65, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   resnext50_32x4d      torchvision keys: 320 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.472, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   resnext101_32x8d     torchvision keys: 626 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.788, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   wide_resnet50_2      torchvision keys: 320 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.553, relative 0)
                              preprocessing matches torchvision IMAGENET1K_V1 (DEFAULT=IMAGENET1K_V2: resize 232, crop 224)
    OK   seresnet50           timm        keys: 384 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.281, relative 0)
                              preprocessing DIFFERS from timm seresnet50.a1_in1k (ours matches ra2_in1k): resize_size ours 256 vs 235
    OK   seresnext50_32x4d    timm        keys: 384 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.265, relative 0)
                              preprocessing matches timm seresnext50_32x4d.racm_in1k
    OK   inception_resnet_v2  timm        keys: 1306 keys equal; load: strict ok; max abs diff 0 (max |logit| 0.194, relative 0)
                              preprocessing matches timm inception_resnet_v2.tf_in1k
    all 11 compared models match
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch import nn

from deploy_res.models import create_model, get_spec, list_models
from deploy_res.models.registry import Preprocessing

REFERENCES = ("torchvision", "timm")


@dataclass
class Result:
    name: str
    reference: str
    ok: bool
    keys: str
    load: str
    max_abs_diff: float | None
    max_abs_logit: float | None
    preprocessing: str


def build_reference(name: str, reference: str) -> nn.Module:
    if reference == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    import timm

    return timm.create_model(name, pretrained=False)


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) * 0.8 + 0.2)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)


def compare_keys(ours: dict, theirs: dict) -> tuple[bool, str]:
    missing = sorted(set(theirs) - set(ours))  # in the reference, not in ours
    unexpected = sorted(set(ours) - set(theirs))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape)
    if not (missing or unexpected or shapes):
        return True, f"{len(ours)} keys equal"
    parts = []
    if missing:
        parts.append(f"{len(missing)} only in reference (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} only in ours (e.g. {unexpected[:3]})")
    if shapes:
        k = shapes[0]
        ours_shape, theirs_shape = tuple(ours[k].shape), tuple(theirs[k].shape)
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: ours {ours_shape} vs {theirs_shape})")
    return False, "; ".join(parts)


def reference_preprocessing(name: str, reference: str, ref: nn.Module) -> tuple[Preprocessing, str]:
    """The reference's own preprocessing, and a note on other weights' recipes."""
    if reference == "timm":
        cfg = ref.pretrained_cfg
        return (
            Preprocessing(
                input_size=tuple(cfg["input_size"]),
                mean=tuple(cfg["mean"]),
                std=tuple(cfg["std"]),
                crop_pct=float(cfg["crop_pct"]),
                interpolation=str(cfg["interpolation"]),
            ),
            f"timm {cfg.get('architecture', name)}.{cfg.get('tag', '')}",
        )
    import torchvision

    enum = torchvision.models.get_model_weights(name)

    def from_weights(weights) -> Preprocessing:
        t = weights.transforms()
        crop = t.crop_size[0]
        return Preprocessing(
            input_size=(3, crop, crop),
            mean=tuple(t.mean),
            std=tuple(t.std),
            crop_pct=crop / t.resize_size[0],
            interpolation=t.interpolation.value,
        )

    v1 = from_weights(enum.IMAGENET1K_V1)
    default = from_weights(enum.DEFAULT)
    note = "torchvision IMAGENET1K_V1"
    if default != v1:
        note += f" (DEFAULT={enum.DEFAULT.name}: resize {default.resize_size}, crop {default.input_size[-1]})"
    return v1, note


def preprocessing_diffs(ours: Preprocessing, theirs: Preprocessing) -> list[str]:
    diffs = []
    for field in ("input_size", "mean", "std", "interpolation", "resize_size"):
        a, b = getattr(ours, field), getattr(theirs, field)
        if field in ("mean", "std"):
            same = all(abs(x - y) < 1e-6 for x, y in zip(a, b))
        else:
            same = a == b
        if not same:
            diffs.append(f"{field} ours {a} vs {b}")
    return diffs


def matching_timm_tags(name: str, ours: Preprocessing) -> list[str]:
    """timm pretrained tags of ``name`` whose eval preprocessing equals ours."""
    import timm

    tags = []
    for full in timm.list_pretrained(f"{name}.*"):
        cfg = timm.models.get_pretrained_cfg(full)
        if cfg is None:
            continue
        theirs = Preprocessing(tuple(cfg.input_size), tuple(cfg.mean), tuple(cfg.std), float(cfg.crop_pct),
                               str(cfg.interpolation))
        if not preprocessing_diffs(ours, theirs):
            tags.append(full.split(".", 1)[1])
    return tags


def describe_preprocessing(name: str, reference: str, ours: Preprocessing, theirs: Preprocessing, note: str) -> str:
    diffs = preprocessing_diffs(ours, theirs)
    if diffs and reference == "timm":
        tags = matching_timm_tags(name, ours)
        note += f" (ours matches {', '.join(tags)})" if tags else " (no timm tag matches ours)"
    return ("matches " if not diffs else "DIFFERS from ") + note + (": " + "; ".join(diffs) if diffs else "")


def check(name: str, batch: int, seed: int, rtol: float, dtype: torch.dtype = torch.float64) -> Result:
    spec = get_spec(name)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ref = build_reference(name, spec.reference)
    randomize_batchnorm(ref, generator)
    ref.eval()
    ours = create_model(name).eval()

    theirs_sd = ref.state_dict()
    keys_ok, keys = compare_keys(ours.state_dict(), theirs_sd)
    try:
        ours.load_state_dict(theirs_sd, strict=True)
        load_ok, load = True, "strict ok"
    except RuntimeError as exc:
        load_ok, load = False, "strict FAILED: " + str(exc).splitlines()[0]

    diff = logit = None
    if load_ok:
        x = torch.randn(batch, *spec.preprocessing.input_size, generator=generator, dtype=dtype)
        ours.to(dtype)
        ref.to(dtype)
        with torch.inference_mode():
            a, b = ours(x), ref(x)
        if a.shape != b.shape:
            load, load_ok = f"{load}; output shapes differ {tuple(a.shape)} vs {tuple(b.shape)}", False
        else:
            diff = (a - b).abs().max().item()
            logit = b.abs().max().item()

    try:
        theirs_pre, note = reference_preprocessing(name, spec.reference, ref)
        pre = describe_preprocessing(name, spec.reference, spec.preprocessing, theirs_pre, note)
    except Exception as exc:  # informational only
        pre = f"(not checked: {type(exc).__name__}: {exc})"

    ok = keys_ok and load_ok and diff is not None and diff <= rtol * logit
    return Result(name, spec.reference, ok, keys, load, diff, logit, pre)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="zoo names (default: all with a torchvision/timm reference)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="float64 (default) makes a wrong eps or residual scale stand out of rounding noise")
    parser.add_argument("--rtol", type=float, default=None,
                        help="max abs logit difference allowed, relative to max |logit| "
                        "(default 1e-9 for float64, 1e-4 for float32)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rtol = args.rtol if args.rtol is not None else (1e-9 if dtype == torch.float64 else 1e-4)

    import timm
    import torchvision

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}; "
          f"{args.dtype} CPU, batch {args.batch}, seed {args.seed}, rtol {rtol:g}")
    names = args.models or list_models()
    failures = compared = 0
    for name in names:
        reference = get_spec(name).reference
        if reference not in REFERENCES:
            print(f"SKIP {name:20s} reference: {reference}")
            continue
        compared += 1
        r = check(name, args.batch, args.seed, rtol, dtype)
        failures += not r.ok
        diff = "n/a"
        if r.max_abs_diff is not None:
            rel = r.max_abs_diff / r.max_abs_logit
            diff = f"{r.max_abs_diff:.3g} (max |logit| {r.max_abs_logit:.3g}, relative {rel:.2g})"
        print(f"{'OK  ' if r.ok else 'FAIL'} {r.name:20s} {r.reference:11s} keys: {r.keys}; load: {r.load}; "
              f"max abs diff {diff}")
        print(f"     {'':20s} preprocessing {r.preprocessing}")
    print(f"{failures} of {compared} compared models mismatch" if failures else f"all {compared} compared models match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
