"""What the paper profile costs (``python -m casekit.bench --study paper``): the paper study's own code path
(:func:`casekit.study.runner.run_all`, its stores and metrics) on the paper's models with random weights and
N seeded synthetic images per model, timed per method, and projected to the paper's sizes.

**What is measured.**  Each run of :func:`casekit.study.profiles.paper_configs` (without the CIFAR-100 seed
study) is split into one runner call per method (``methods=(m,)``, RQ1 + RQ2 as in the paper) and one for the
sparsity rows (``rq1=rq2=False``), each into its own store; a method's seconds are that call's ``compute``
time (the runner's batch loop: the engine call, the metrics, the deletion forwards, the store writes; not
loading the model or drawing the sample).  Run together, the gradient methods share one forward and one
backward, so the sum of the parts slightly overstates an all-methods run.  The projection is per-image seconds
× :data:`~casekit.study.config.PAPER_N_IMAGES`, plus the paper subject's set-up forwards (the 10,000 held-out
images of the confusion matrix and the ~1,250 scanned for 1,000 correctly classified ones) at the measured
forward time.  Labels are the model's own predictions (so the "correctly classified" sample keeps every
image); CASE's confusion matrix is all zeros (its contrast sets are then the lowest class indices: the cost
does not depend on which classes they are).

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`casekit.subjects`, :mod:`.config`,
:mod:`.batch`, :mod:`.runner`, :mod:`.subject`, :mod:`.profiles`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..cam.checks import resolve_layer
from ..cam.engine import METHODS
from ..evaluation.stats import class_sensitivity_test
from ..subjects import models as zoo
from . import batch as batch_module
from .config import PAPER_N_IMAGES, PAPER_STUDY_MODELS, RunConfig
from .profiles import paper_configs
from .runner import run_all
from .subject import Subject

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Forwards of the paper subject's set-up per model: 10,000 held-out images (confusion matrix) and about
#: 1,250 validation images scanned for 1,000 correctly classified ones.
SETUP_FORWARDS = 10_000 + 1_250
#: Images of the subject timed by :func:`forward_costs` (the first ones of its dataset).
FORWARD_PROBE = 256
GRADIENT = ("gradcam", "gradcam++", "layercam", "case")


class SyntheticImages(Dataset):
    """``N`` seeded random images ``[3, S, S]`` (standard normal, i.e. already normalised) labelled with the
    model's own top-1 predictions."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.cpu(), labels.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def synthetic_subject(model: nn.Module, layers: dict[str, str], n_images: int, size: int = 224, seed: int = 0,
                      device: str = "cpu", num_classes: int | None = None) -> Subject:
    """A :class:`Subject` of ``n_images`` seeded random ``size × size`` images labelled by ``model`` itself
    (every image is "correctly classified") and an all-zero confusion matrix."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 3, size, size, generator=g)
    model.to(device).eval()
    with torch.no_grad():
        logits = torch.cat([model(images[i:i + 16].to(device)).float().cpu() for i in range(0, n_images, 16)])
    C = num_classes or logits.shape[1]
    return Subject(model, dict(layers), SyntheticImages(images, logits.argmax(1)), torch.zeros(C, C),
                   fingerprint=f"synthetic-{seed}-{n_images}-{size}")


@contextlib.contextmanager
def engine_amp(amp: str) -> Iterator[list]:
    """Within the block the study's engine call (``casekit.study.batch.explain``) runs with
    ``amp_dtype=AMP[amp]``; yields a list that receives every call's maps
    ``{method: [B, T, H, W]}``.
    """
    if amp not in AMP:
        raise ValueError(f"amp must be one of {tuple(AMP)}, got {amp!r}")
    original, calls = batch_module.explain, []

    def wrapped(*args: Any, **kwargs: Any):
        if amp != "none":  # forced on every call (the runs are configured with precision="fp32")
            kwargs["amp_dtype"] = AMP[amp]
        res = original(*args, **kwargs)
        calls.append({m: v.float().cpu() for m, v in res.maps.items()})
        return res

    batch_module.explain = wrapped
    try:
        yield calls
    finally:
        batch_module.explain = original


@dataclass
class ModelTiming:
    """Per-image seconds of one run (model, layer): per method, sparsity, one forward, forward+backward,
    and the forward up to the attribution layer; ``channels`` C of the layer; ``maps`` the engine's maps per
    method."""

    model: str
    layer: str
    layer_name: str
    channels: int
    method_s: dict[str, float]
    sparsity_s: float
    forward_s: float
    backward_s: float
    head_s: float
    n_images: int
    deletion_ks: int
    maps: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    agreement: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    setup_forwards: int = SETUP_FORWARDS  # forwards of the subject's set-up (confusion matrix, sampling)

    @property
    def total_s(self) -> float:
        return sum(self.method_s.values()) + self.sparsity_s

    def shares(self) -> dict[str, float]:
        """Share of the run's total time per method (and ``"sparsity"``); sums to 1."""
        parts = {**self.method_s, "sparsity": self.sparsity_s}
        return {k: v / self.total_s for k, v in parts.items()}

    def projected_s(self, n_images: int = PAPER_N_IMAGES) -> dict[str, float]:
        """Seconds at ``n_images`` per method, sparsity and set-up (``setup_forwards`` forwards)."""
        out = {k: v * n_images for k, v in {**self.method_s, "sparsity": self.sparsity_s}.items()}
        out["setup"] = self.setup_forwards * self.forward_s
        return out


class _Stop(Exception):
    pass


def _best(fn, device: torch.device, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def forward_costs(model: nn.Module, images: torch.Tensor, layer_name: str,
                  amp: str = "none") -> tuple[float, float, float]:
    """Per-image seconds of one forward (no autograd), of forward + backward (of the top-1 logits' sum), and
    of the forward up to ``layer_name``'s output (stopped there by a hook)."""
    dev, B = images.device, images.shape[0]
    module = resolve_layer(model, layer_name)[1]

    def stop(*_: Any) -> None:
        raise _Stop

    def head() -> None:
        h = module.register_forward_hook(stop)
        try:
            with torch.no_grad():
                model(images)
        except _Stop:
            pass
        finally:
            h.remove()

    def fwd_bwd() -> None:
        x = images.clone().requires_grad_(True)
        model(x).max(dim=1).values.sum().backward()

    autocast = torch.autocast(dev.type, dtype=AMP[amp]) if AMP[amp] is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        fwd = _best(lambda: model(images), dev)
    with autocast:
        both = _best(fwd_bwd, dev)
    model.zero_grad(set_to_none=True)
    return fwd / B, both / B, _best(head, dev) / B


def time_run(config: RunConfig, subject: Subject, root: Path, amp: str = "none",
             progress: bool = False, setup_forwards: int = SETUP_FORWARDS) -> ModelTiming:
    """One paper run split per method through :func:`run_all` (see the module docstring) → timings, the maps
    of each method (from the engine) and the top-1/top-2 agreements per method."""
    method_s, maps, agreement = {}, {}, {}
    name = subject.layer_name(config.layer)
    probe = range(min(len(subject.dataset), FORWARD_PROBE))
    images = torch.stack([subject.dataset[i][0] for i in probe]).to(config.device)
    # first, so that it also warms up the allocator and kernels (forward and backward) before the runs
    fwd, both, head = forward_costs(subject.model, images, name, amp)
    for m in config.methods:
        c = dataclasses.replace(config, methods=(m,), sparsity_layers=())
        with engine_amp(amp) as calls:
            res = run_all([c], results_dir=root / f"{amp}-{m}", subjects={c.name: subject}, progress=progress)
        method_s[m] = res.runs[0].seconds["compute"] / config.n_images
        maps[m] = torch.cat([call[m] for call in calls])
        ag = res.agreement(comparison="top1_vs_top2") if config.rq1 else None
        agreement[m] = ag["agreement"].to_numpy() if ag is not None else np.array([])
    c = dataclasses.replace(config, rq1=False, rq2=False, sparsity_layers=None)
    res = run_all([c], results_dir=root / f"{amp}-sparsity", subjects={c.name: subject}, progress=progress)
    sparsity_s = res.runs[0].seconds["compute"] / config.n_images
    channels = int(batch_module.layer_activations(subject.model, images[:1], [name])[name].shape[1])
    return ModelTiming(config.model, config.layer, name, channels, method_s, sparsity_s, fwd, both - fwd,
                       head, config.n_images, len(config.curve_ks), maps, agreement, setup_forwards)


def paper_bench_configs(n_images: int, device: str = "cpu", models: Sequence[str] | None = None,
                        methods: Sequence[str] | None = None) -> list[RunConfig]:
    """The paper study's runs (four models, DenseNet-201 also at ``norm5``; no CIFAR-100 seed study) with
    ``n_images`` per run, one batch, on ``device``."""
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    unknown = [m for m in (models or ()) if m not in PAPER_STUDY_MODELS]
    if unknown:
        raise ValueError(f"unknown paper models {unknown}; choose from {PAPER_STUDY_MODELS}")
    over: dict[str, Any] = {}
    if methods:
        over["methods"] = tuple(methods)
    return paper_configs(n_images, models=models, seed_study=False, device=device,
                         batch_size=n_images, precision="fp32", **over)


#: Forwards of a cifar10 subject's set-up: the 1,000 held-out images (confusion matrix) and the 1,000
#: evaluated ones scanned for correctly classified images.
CIFAR10_SETUP_FORWARDS = 2_000


def cifar10_bench_configs(n_images: int, device: str = "cpu", models: Sequence[str] | None = None,
                          methods: Sequence[str] | None = None) -> list[RunConfig]:
    """The cifar10 study's runs (:func:`casekit.study.profiles.cifar10_configs`: four networks, both layers
    where they apply) on the first ``n_images`` of each run's own sample (real images, the study's batch
    size), every method in float32 (``--amp`` forces the autocast dtype itself)."""
    from .profiles import CIFAR10_STUDY_MODELS, cifar10_configs

    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    unknown = [m for m in (models or ()) if m not in CIFAR10_STUDY_MODELS]
    if unknown:
        raise ValueError(f"unknown cifar10 networks {unknown}; choose from {CIFAR10_STUDY_MODELS}")
    over: dict[str, Any] = {"methods": tuple(methods)} if methods else {}
    return cifar10_configs(n_images, models=models, device=device, precision="fp32", **over)


def study_bench(n_images: int = 2, device: str = "cpu", amp: str = "none",
                models: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                seed: int = 0, size: int = 224,
                configs: Sequence[RunConfig] | None = None, subjects: dict[str, Subject] | None = None,
                progress: bool = False, study: str = "paper") -> list[ModelTiming]:
    """Time the paper study (or the cifar10 study, ``study="cifar10"``, on the real networks and images; or
    ``configs`` with their ``subjects``, keyed by model name) → one :class:`ModelTiming` per run.  Paper
    models are built with ``weights=None`` and seeded (``seed``)."""
    if amp not in AMP:
        raise ValueError(f"amp must be one of {tuple(AMP)}, got {amp!r}")
    if study not in ("paper", "cifar10"):
        raise ValueError(f"study must be 'paper' or 'cifar10', got {study!r}")
    bench_configs = paper_bench_configs if study == "paper" else cifar10_bench_configs
    configs = list(configs or bench_configs(n_images, device, models, methods))
    setup = SETUP_FORWARDS if study == "paper" else CIFAR10_SETUP_FORWARDS
    subjects = dict(subjects or {})
    out = []
    with tempfile.TemporaryDirectory(prefix="casekit-bench-") as tmp:
        for c in configs:
            if c.model not in subjects and c.profile == "cifar10":
                from .subject import load_subject

                subjects[c.model] = load_subject(c)
            elif c.model not in subjects:
                torch.manual_seed(seed)
                model, layers, _ = zoo.load_paper_model(c.model, weights=None, device=device)
                subjects[c.model] = synthetic_subject(model, layers, c.n_images, size, seed, device)
            out.append(time_run(c, subjects[c.model], Path(tmp), amp, progress, setup))
            if progress:  # each run's table as soon as it is measured
                print(format_report(out[-1:]), flush=True)
    return out


def floor_forwards(method: str, t: ModelTiming) -> float:
    """The physical floor of a method's per-image cost in the study, in seconds: gradient methods one
    forward + one batched backward; Score-CAM C forwards (shared by the targets) + one; Ablation-CAM C
    forwards of the layers after the hooked one + one forward; every method also the RQ2 deletion
    forwards (one per k)."""
    deletion = t.deletion_ks * t.forward_s
    if method in GRADIENT:
        return t.forward_s + t.backward_s + deletion
    if method == "scorecam":
        return (t.channels + 1) * t.forward_s + deletion
    if method == "ablationcam":
        return t.forward_s + t.channels * max(t.forward_s - t.head_s, 0.0) + deletion
    raise ValueError(f"no floor for method {method!r}")


def pearson(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pearson r per map of two ``[..., H, W]`` stacks (maps constant in both: 1, in one only: 0)."""
    x, y = a.flatten(-2).double(), b.flatten(-2).double()
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    den = (x.norm(dim=-1) * y.norm(dim=-1))
    r = (x * y).sum(-1) / den.clamp_min(1e-300)
    both = (x.norm(dim=-1) == 0) & (y.norm(dim=-1) == 0)
    return torch.where(both, 1.0, torch.where(den == 0, 0.0, r)).reshape(-1).numpy()


def verdict(agreement: np.ndarray) -> str:
    """Table I's verdict on top-1/top-2 agreements (Wilcoxon, H1 median < 0.5, α = 0.05; any n ≥ 1)."""
    a = agreement[np.isfinite(agreement)]
    if not len(a):
        return "n/a"
    r = class_sensitivity_test(a, min_n=1, n_boot=200)
    return "n/a" if not np.isfinite(r.p) else ("reject" if r.reject else "keep")


def format_report(rows: Sequence[ModelTiming], n_images: int = PAPER_N_IMAGES,
                  label: str = "paper profile") -> str:
    """The three tables: per run and method s/image, share, projection; cost vs one forward and the floor."""
    lines = [f"{'model':<15}{'layer':<11}{'method':<12}{'s/image':>9}{'share':>7}{'study (h)':>10}"]
    grand = 0.0
    for t in rows:
        proj, shares = t.projected_s(n_images), t.shares()
        for k in [*t.method_s, "sparsity"]:
            s = t.method_s.get(k, t.sparsity_s)
            lines.append(f"{t.model:<15}{t.layer:<11}{k:<12}{s:>9.3f}{shares[k]:>7.1%}"
                         f"{proj[k] / 3600:>10.2f}")
        lines.append(f"{t.model:<15}{t.layer:<11}{'setup':<12}{'':>9}{'':>7}{proj['setup'] / 3600:>10.2f}")
        total = sum(proj.values())
        grand += total
        lines.append(f"{t.model:<15}{t.layer:<11}{'TOTAL':<12}{t.total_s:>9.3f}{1:>7.0%}"
                     f"{total / 3600:>10.2f}")
    lines.append(f"projected {label} ({n_images} images per run): {grand / 3600:.2f} h")
    missing = [m for m in METHODS if any(m not in t.method_s for t in rows)]
    if missing:
        floor = sum(floor_forwards(m, t) * n_images for t in rows for m in missing if m not in t.method_s)
        lines.append(f"  + methods not run ({', '.join(missing)}) at their physical floor (below): "
                     f"{floor / 3600:.2f} h → at least {(grand + floor) / 3600:.2f} h in all")
        for t in rows:
            parts = [f"{m} {floor_forwards(m, t) * n_images / 3600:.2f} h" for m in missing
                     if m not in t.method_s]
            lines.append(f"    {t.model:<15}{t.layer:<11}" + "  ".join(parts))
    lines += ["", f"{'model':<15}{'layer':<11}{'C':>6}{'fwd s/img':>11}{'bwd/fwd':>8}{'method':>12}"
              f"{'x forward':>11}{'floor x fwd':>12}{'x floor':>9}"]
    for t in rows:
        for m, s in t.method_s.items():
            f = floor_forwards(m, t)
            lines.append(f"{t.model:<15}{t.layer:<11}{t.channels:>6}{t.forward_s:>11.4f}"
                         f"{t.backward_s / t.forward_s:>8.2f}{m:>12}{s / t.forward_s:>11.1f}"
                         f"{f / t.forward_s:>12.1f}{s / f:>9.2f}")
    return "\n".join(lines)


def compare_amp(base: Sequence[ModelTiming], amp: Sequence[ModelTiming], name: str = "bf16") -> str:
    """Speed of ``amp`` vs fp32 per run and method, the maps' Pearson r (min/median per method), and Table I's
    verdict (top-1/top-2 agreement test) under each."""
    lines = [f"{'model':<15}{'layer':<11}{'method':<12}{'fp32 s/img':>11}{name + ' s/img':>11}{'speed-up':>9}"
             f"{'min r':>8}{'median r':>9}  verdict fp32 → {name}"]
    for a, b in zip(base, amp):
        for m in a.method_s:
            r = pearson(a.maps[m], b.maps[m])
            va, vb = verdict(a.agreement[m]), verdict(b.agreement[m])
            flag = "" if va == vb else "  CHANGED"
            lines.append(f"{a.model:<15}{a.layer:<11}{m:<12}{a.method_s[m]:>11.3f}{b.method_s[m]:>11.3f}"
                         f"{a.method_s[m] / b.method_s[m]:>8.2f}x{np.min(r):>8.4f}{np.median(r):>9.4f}"
                         f"  {va} → {vb}{flag}")
    return "\n".join(lines)


__all__ = ["AMP", "METHODS", "ModelTiming", "SyntheticImages", "compare_amp", "engine_amp", "floor_forwards",
           "format_report", "forward_costs", "paper_bench_configs", "cifar10_bench_configs", "pearson",
           "study_bench",
           "synthetic_subject", "time_run", "verdict"]
