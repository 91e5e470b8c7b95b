"""Benchmark: casekit vs pytorch-grad-cam on the same inputs (``python -m casekit.bench``).

Targets are the top-1 and top-2 classes of each image.  Both libraries' maps
are checked to agree (Pearson r per map) before any time is reported.

* gradient methods: ResNet-50 (``weights=None``), 224×224, batch 16, layer ``layer4.2.conv3``;
* CASE (K = 3) against the authors' approach: 1+K pytorch-grad-cam Grad-CAM
  passes per target, whose gradients are projected as in the reference code;
* Score-CAM / Ablation-CAM (one forward pass per channel): ResNet-18, 112×112,
  2 images, layer ``layer4``; on CUDA also under bf16 autocast.

``--quick`` runs the same comparison on smaller sizes (under a minute on 2 CPU cores).
pytorch-grad-cam (PyPI ``grad-cam``) must be installed.

``--scorecam-blank`` instead counts, on the paper's four models and layers (``weights=None``), the
channels that are constant at the layer's resolution and those whose Score-CAM mask is exactly 0
(they share one blank-image forward), and times Score-CAM with and without that sharing on
``--gain`` models (default ResNet-18 ``layer4``).

``--study paper`` instead times the paper study's own code path (runner, store, metrics) on the paper's four
models (``weights=None``) with ``--images`` synthetic 224×224 images each, per method, and projects it to the
paper's sizes (:mod:`casekit.study.paper_bench`); ``--amp bf16`` also runs it under bf16 and compares.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import nn

from .cam.engine import explain
from .cam.hooks import LayerCapture, evaluation_mode
from .cam.perturbation import scorecam, scorecam_blank_channels

GOALS = {"gradcam": 3.0, "gradcam++": 3.0, "layercam": 3.0, "case": 6.0, "scorecam": 1.8, "ablationcam": 1.8}


@dataclass
class Row:
    method: str
    model: str
    size: int
    batch: int
    maps: int
    casekit_s: float
    gradcam_lib_s: float
    casekit_maps_per_s: float
    gradcam_lib_maps_per_s: float
    speedup: float
    goal: float
    min_r: float
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _pearson_min(ours: np.ndarray, ref: np.ndarray) -> float:
    """Smallest per-map Pearson r; maps empty in both count as r = 1."""
    rs = []
    for a, b in zip(ours.reshape(-1, ours.shape[-2] * ours.shape[-1]),
                    ref.reshape(-1, ref.shape[-2] * ref.shape[-1])):
        if a.max() == 0 and b.max() < 1e-6:
            rs.append(1.0)
        elif a.std() == 0 or b.std() == 0:
            rs.append(0.0)
        else:
            rs.append(float(np.corrcoef(a, b)[0, 1]))
    return min(rs)


def _pgc():
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.ablation_layer import AblationLayer
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:  # pragma: no cover - exercised only without the test extra
        raise SystemExit("the benchmark needs pytorch-grad-cam: pip install 'grad-cam>=1.5,<1.6'") from err

    class FixedAblationLayer(AblationLayer):
        """Ablation value computed once per image (pytorch-grad-cam drifts it by 1e7 per row otherwise)."""

        def __call__(self, x):
            output = self.activations
            low = torch.min(output)
            value = 0.0 if low == 0 else low - 1e7
            for i in range(output.size(0)):
                output[i, self.indices[i], :] = value
            return output

    classes = {
        "gradcam": pgc.GradCAM,
        "gradcam++": pgc.GradCAMPlusPlus,
        "layercam": pgc.LayerCAM,
        "scorecam": pgc.ScoreCAM,
        "ablationcam": pgc.AblationCAM,
    }
    return classes, ClassifierOutputTarget, FixedAblationLayer


def _clone(a: torch.Tensor) -> torch.Tensor:
    return a.clone()


def pgc_maps(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor,
             targets: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's maps [B, T, H, W]: one call per target rank (its API takes one class per image)."""
    classes, Target, FixedAblation = _pgc()
    out = np.zeros((targets.shape[0], targets.shape[1], *images.shape[-2:]), dtype=np.float32)
    for t in range(targets.shape[1]):
        kwargs: dict = {"reshape_transform": _clone}
        if method == "ablationcam":
            kwargs["ablation_layer"] = FixedAblation()
        # its Score-CAM and Ablation-CAM draw tqdm bars on stderr; keep the benchmark's table readable
        with classes[method](model=model, target_layers=[layer], **kwargs) as cam, \
                contextlib.redirect_stderr(io.StringIO()):
            out[:, t] = cam(images, [Target(int(c)) for c in targets[:, t]])
    return out


def pgc_case_loop(model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                  contrast: torch.Tensor) -> np.ndarray:
    """The authors' CASE: for each target, 1+K separate pytorch-grad-cam Grad-CAM passes
    (forward + full backward), then ``w⊥ = w_u − (w_u·w̄)/(‖w̄‖²+1e-8) w̄`` on the pooled gradients."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    classes, Target, _ = _pgc()
    B, T, K = contrast.shape
    out = np.zeros((B, T, *images.shape[-2:]), dtype=np.float32)
    for t in range(T):
        pooled, acts = [], None
        for column in [targets[:, t]] + [contrast[:, t, k] for k in range(K)]:
            with classes["gradcam"](model=model, target_layers=[layer], reshape_transform=_clone) as cam:
                cam(images, [Target(int(c)) for c in column])
                acts = cam.activations_and_grads.activations[0].cpu().numpy()
                pooled.append(cam.activations_and_grads.gradients[0].cpu().numpy().mean(axis=(2, 3)))
        w_u, w_bar = pooled[0], np.mean(pooled[1:], axis=0)
        coef = (w_u * w_bar).sum(1, keepdims=True) / ((w_bar * w_bar).sum(1, keepdims=True) + 1e-8)
        w_perp = w_u - coef * w_bar
        cam_raw = np.maximum((w_perp[:, :, None, None] * acts).sum(1), 0)
        out[:, t] = scale_cam_image(scale_cam_image(cam_raw, (images.shape[-1], images.shape[-2])))
    return out


def _contrast(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Contrast classes for the benchmark: the next k classes of each image's ranking after its target."""
    ranking = logits.argsort(dim=1, descending=True)
    rank_of = ranking.argsort(dim=1)
    B, T = targets.shape
    out = torch.empty(B, T, k, dtype=torch.long, device=logits.device)
    for t in range(T):
        r = rank_of.gather(1, targets[:, t : t + 1])
        idx = (r + torch.arange(1, k + 1, device=logits.device)) % logits.shape[1]
        out[:, t] = ranking.gather(1, idx)
    return out


def run(quick: bool = False, device: str = "cpu", repeat: int = 1, methods: tuple[str, ...] | None = None,
        k: int = 3) -> list[Row]:
    dev = torch.device(device)
    torch.manual_seed(0)
    if quick:
        grad_cfg = dict(arch="resnet50", size=112, batch=4, layer="layer4.2.conv3")
        free_cfg = dict(arch="resnet18", size=64, batch=1, layer="layer4")
    else:
        grad_cfg = dict(arch="resnet50", size=224, batch=16, layer="layer4.2.conv3")
        free_cfg = dict(arch="resnet18", size=112, batch=2, layer="layer4")
    wanted = methods or ("gradcam", "gradcam++", "layercam", "case", "scorecam", "ablationcam")
    rows: list[Row] = []
    for cfg, group in ((grad_cfg, ("gradcam", "gradcam++", "layercam", "case")),
                       (free_cfg, ("scorecam", "ablationcam"))):
        todo = [m for m in group if m in wanted]
        if not todo:
            continue
        model = getattr(torchvision.models, cfg["arch"])(weights=None).to(dev).eval()
        layer = dict(model.named_modules())[cfg["layer"]]
        images = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=dev)
        with torch.no_grad():
            logits = model(images)
        targets = logits.topk(2, dim=1).indices
        contrast = _contrast(logits, targets, k)
        n_maps = targets.numel()
        # warm-up (allocators, kernels) on one image, for both libraries, so neither is timed cold
        explain(model, images[:1], cfg["layer"], "gradcam", targets[:1])
        pgc_maps("gradcam", model, layer, images[:1], targets[:1])
        for m in todo:
            variants = [(None, "")]
            if m in ("scorecam", "ablationcam") and dev.type == "cuda":
                variants.append((torch.bfloat16, "bf16 autocast"))
            if m == "case":
                ref_t, ref = _timed(lambda: pgc_case_loop(model, layer, images, targets, contrast), dev,
                                    repeat)
            else:
                ref_t, ref = _timed(lambda: pgc_maps(m, model, layer, images, targets), dev, repeat)
            for amp, note in variants:
                ours_t, res = _timed(
                    lambda: explain(model, images, cfg["layer"], m, targets,
                                    contrast if m == "case" else None, amp_dtype=amp),
                    dev,
                    repeat,
                )
                ours = res.maps[m].float().cpu().numpy()
                r = _pearson_min(ours, ref)
                if amp is None and r < 0.99:
                    raise SystemExit(f"{m}: casekit and pytorch-grad-cam disagree (min Pearson r = {r:.4f})")
                if m == "case":
                    note = f"K={k}; baseline: {1 + k} Grad-CAM passes per target"
                rows.append(
                    Row(m, cfg["arch"], cfg["size"], cfg["batch"], n_maps, ours_t, ref_t, n_maps / ours_t,
                        n_maps / ref_t,
                        ref_t / ours_t, GOALS[m], r, note)
                )
                print(_format_row(rows[-1]), flush=True)
    return rows


PAPER_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("resnet50", ("layer4.2.conv3", "layer4")),
    ("vgg19_bn", ("features.49",)),
    ("densenet201", ("features.denseblock4.denselayer32.conv2", "features.norm5")),
    ("convnext_large", ("features.7.2.block.0",)),
)


def _layer_activations(model: nn.Module, layers: tuple[str, ...],
                       images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` from one forward pass, without gradients."""
    named = dict(model.named_modules())
    captures = [LayerCapture(named[n], n, grad_from_layer=False) for n in layers]
    with evaluation_mode(model), torch.no_grad(), contextlib.ExitStack() as stack:
        for c in captures:
            stack.enter_context(c.attached())
        model(images)
    return {c.name: c.activations for c in captures}


def blank_census(models: tuple[tuple[str, tuple[str, ...]], ...] = PAPER_LAYERS, n_images: int = 2,
                 size: int = 224, device: str = "cpu", seed: int = 0) -> list[dict]:
    """Per model, layer and image: channels C, those constant at ``h × w``, those with an all-zero Score-CAM
    mask."""
    rows = []
    for arch, layers in models:
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(weights=None).to(device).eval()
        images = torch.randn(n_images, 3, size, size, device=device)
        for layer, A in _layer_activations(model, layers, images).items():
            flat = A.flatten(2)
            constant = (flat.amax(2) == flat.amin(2)).sum(1)
            blank = scorecam_blank_channels(A, (size, size)).sum(1)
            for b in range(n_images):
                rows.append(dict(model=arch, layer=layer, image=b, channels=A.shape[1],
                                 hw=f"{A.shape[2]}x{A.shape[3]}", constant=int(constant[b]),
                                 blank=int(blank[b])))
                print(f"{arch:<15} {layer:<40} image {b}: C={A.shape[1]:>5} h×w={rows[-1]['hw']:<6} "
                      f"constant={rows[-1]['constant']:>5} blank mask={rows[-1]['blank']:>5}", flush=True)
        del model
    return rows


def scorecam_gain(arch: str, layer: str, size: int = 224, n_images: int = 1, device: str = "cpu",
                  batch: int = 64, seed: int = 0) -> dict:
    """Score-CAM with one forward per channel vs one shared blank-image forward: times, forwards, max map
    difference."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).to(dev).eval()
    images = torch.randn(n_images, 3, size, size, device=dev)
    A = _layer_activations(model, (layer,), images)[layer]
    with torch.no_grad():
        targets = model(images).topk(2, dim=1).indices
    blank = int(scorecam_blank_channels(A, (size, size)).sum())
    out, cpu = {}, {}
    with torch.no_grad():
        model(images[:1].expand(batch, -1, -1, -1))  # warm-up: neither variant is timed cold
    for share in (False, True):
        with evaluation_mode(model):
            c0 = time.process_time()
            out[share] = _timed(lambda: scorecam(model, images, A, targets, batch, share_blank=share), dev, 1)
            cpu[share] = time.process_time() - c0
    diff = float((out[True][1] - out[False][1]).abs().max() / out[False][1].abs().max())
    row = dict(model=arch, layer=layer, size=size, images=n_images, channels=A.shape[1] * n_images,
               blank=blank, forwards_before=A.shape[1] * n_images,
               forwards_after=A.shape[1] * n_images - blank + (blank > 0), seconds_before=out[False][0],
               seconds_after=out[True][0], speedup=out[False][0] / out[True][0],
               cpu_seconds_before=cpu[False], cpu_seconds_after=cpu[True], max_rel_raw_map_diff=diff)
    print(f"{arch} {layer} {size}px, {n_images} image(s): {blank}/{row['channels']} blank channels; "
          f"{row['forwards_before']} → {row['forwards_after']} forwards; {row['seconds_before']:.1f} s → "
          f"{row['seconds_after']:.1f} s wall ({row['speedup']:.2f}×), {cpu[False]:.1f} s → {cpu[True]:.1f} "
          f"s CPU; raw maps differ by ≤ {diff:.1e} (relative)", flush=True)
    return row


HEADER = (f"{'method':<12} {'model':<9} {'size':>4} {'B':>3} {'maps':>4} {'casekit maps/s':>15} "
          f"{'pgc maps/s':>11} {'speed-up':>9} {'goal':>5} {'min r':>7}  note")


def _format_row(r: Row) -> str:
    flag = "ok" if r.speedup >= r.goal else "BELOW GOAL"
    return (f"{r.method:<12} {r.model:<9} {r.size:>4} {r.batch:>3} {r.maps:>4} {r.casekit_maps_per_s:>15.2f} "
            f"{r.gradcam_lib_maps_per_s:>11.2f} {r.speedup:>8.1f}x {r.goal:>4.1f}x {r.min_r:>7.4f}  {flag} "
            f"{r.note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m casekit.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (under a minute on 2 CPU cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=1,
                   help="timed repetitions per measurement (the best is kept)")
    p.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    p.add_argument("-k", type=int, default=3, help="CASE contrast-set size K")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--scorecam-blank", action="store_true",
                   help="count blank Score-CAM channels on the paper's layers and time the shared blank "
                        "forward")
    p.add_argument("--images", type=int, default=2,
                   help="images per model (--scorecam-blank census, --study)")
    p.add_argument("--gain", nargs="*", default=["resnet18:layer4"], metavar="ARCH:LAYER",
                   help="models timed by --scorecam-blank (one 224×224 image each)")
    p.add_argument("--study", choices=["paper", "cifar10"],
                   help="time the paper study's (or the cifar10 study's) code path (see above)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="--study: also run under this autocast dtype and compare with fp32")
    p.add_argument("--models", nargs="*", default=None, help="--study: subset of the study's models")
    a = p.parse_args(argv)
    if a.study:
        return _study_main(a)
    if a.scorecam_blank:
        census = blank_census(n_images=a.images, device=a.device)
        gains = [scorecam_gain(*g.split(":"), device=a.device) for g in a.gain]
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"census": census, "gain": gains}, fh, indent=2)
        return 0
    dev = torch.device(a.device)
    cpu = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu
    print(f"casekit benchmark on {name}; torch {torch.__version__}; {'quick' if a.quick else 'full'} sizes",
          flush=True)
    print(HEADER, flush=True)
    rows = run(a.quick, a.device, a.repeat, tuple(a.methods) if a.methods else None, a.k)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"device": name, "torch": torch.__version__, "quick": a.quick,
                       "rows": [asdict(r) for r in rows]}, fh, indent=2)
    return 0


def _study_main(a: argparse.Namespace) -> int:
    """``--study paper|cifar10``: time, print the tables, optionally compare with ``--amp``."""
    from .study import paper_bench as pb
    from .study.config import PAPER_N_IMAGES
    from .study.profiles import CIFAR10_N_IMAGES

    if a.images < 1:
        raise SystemExit(f"--images must be >= 1, got {a.images}")
    dev = torch.device(a.device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    what = ("synthetic 224x224 image(s) per model, weights=None" if a.study == "paper" else
            "real CIFAR-10 test image(s) per run (the first of each run's sample), the pretrained networks")
    print(f"{a.study} study bench on {where}; torch {torch.__version__}; {a.images} {what}", flush=True)
    print(pb.__doc__.split("\n\n")[1], flush=True)
    methods = tuple(a.methods) if a.methods else None
    project = PAPER_N_IMAGES if a.study == "paper" else CIFAR10_N_IMAGES
    base = pb.study_bench(a.images, a.device, "none", a.models, methods, progress=True, study=a.study)
    print(pb.format_report(base, project, f"{a.study} profile"), flush=True)
    out: dict = {"device": where, "images": a.images, "study": a.study,
                 "fp32": [_timing_dict(t) for t in base]}
    if a.amp != "none":
        other = pb.study_bench(a.images, a.device, a.amp, a.models, methods, progress=True, study=a.study)
        print(f"\n--amp {a.amp} (the engine's amp_dtype: Score-CAM / Ablation-CAM forwards under autocast)")
        print(pb.format_report(other, project, f"{a.study} profile"), flush=True)
        print(pb.compare_amp(base, other, a.amp), flush=True)
        out[a.amp] = [_timing_dict(t) for t in other]
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


def _timing_dict(t) -> dict:
    return {"model": t.model, "layer": t.layer, "channels": t.channels, "method_s": t.method_s,
            "sparsity_s": t.sparsity_s, "forward_s": t.forward_s, "backward_s": t.backward_s,
            "head_s": t.head_s, "shares": t.shares(), "projected_s": t.projected_s()}


if __name__ == "__main__":
    sys.exit(main())
