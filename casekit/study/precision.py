"""The precision of each method in a run (``RunConfig.precision``) and the exactness check that decides it.

**Policy** (:func:`candidate_dtypes`).  ``"fp32"``: every method in float32.  ``"bf16"``: Score-CAM's masked
forwards and the gradient methods' shared forward and backward under bfloat16 autocast.  ``"auto"`` (the
default): bfloat16 where the device has fast bfloat16 units (a CUDA GPU that supports it; a CPU with AMX or
AVX-512-BF16) — for Score-CAM on any such device, for the gradient methods on CUDA only (on a CPU they cost
milliseconds per image: nothing to gain).  Never in bfloat16: Ablation-CAM, whose weights are differences of
logits that bfloat16 rounds away (on the paper's models it flipped three of its verdicts), and the deletion
curves, which are the fidelity measurement itself.

**The check** (:func:`precision_check`).  On a seeded check sample — the first :data:`CHECK_IMAGES` images of
the run's sample, itself a seeded random draw — every method with a bfloat16 candidate is computed twice, in
float32 and in bfloat16, with the run's own targets and contrast sets.  It keeps bfloat16 when

* for at least :data:`CHECK_SHARE` of the images its top-1/top-2 agreement (at the run's k) and the top-1
  map's confidence drop (at the run's ``fidelity_k``, blanking always in float32) are within
  :data:`CHECK_TOLERANCE` of float32's, and
* the median Pearson r between the float32 and bfloat16 maps is at least :data:`CHECK_MEDIAN_R`;

otherwise the method runs in float32 and the reason is recorded.  The figures are written beside the run's
stores (``precision.json``) and read back by :func:`load_precision`; a resumed run reuses them.

Imports: :mod:`casekit.cam`, :mod:`casekit.evaluation`, :mod:`.config`, :mod:`.subject`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .._io import atomic_path
from ..cam.engine import explain
from ..cam.registry import REGISTRY
from ..evaluation.metrics import confidence_drop, topk_agreement
from .config import RunConfig

#: Images of the check sample (all of the sample when it is smaller).
CHECK_IMAGES = 32
#: The largest difference of a per-image agreement or confidence drop that counts as unchanged.
CHECK_TOLERANCE = 0.02
#: The share of the check images whose agreement and drop must be unchanged.
CHECK_SHARE = 0.95
#: The smallest median Pearson r of the maps.
CHECK_MEDIAN_R = 0.999
#: Methods that always run in float32 (see the module docstring).
FLOAT32_ONLY: tuple[str, ...] = ("ablationcam",)
PRECISION_FILE = "precision.json"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def fast_bf16(device: str | torch.device) -> bool:
    """True when ``device`` has fast bfloat16 arithmetic: a CUDA GPU that supports it, or a CPU with AMX
    tiles or AVX-512-BF16 instructions."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = [getattr(cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return any(bool(f()) for f in checks if f is not None)
    return False


def candidate_dtypes(config: RunConfig) -> dict[str, str]:
    """Each of the run's methods → ``"bf16"`` or ``"fp32"`` before the check (the policy above)."""
    device = torch.device(config.device)
    out = {}
    for m in config.methods:
        gradient = REGISTRY[m].needs_gradients
        if config.precision == "fp32" or m in FLOAT32_ONLY:
            out[m] = "fp32"
        elif config.precision == "bf16":
            out[m] = "bf16"
        else:  # auto
            fast = fast_bf16(device)
            out[m] = "bf16" if fast and (not gradient or device.type == "cuda") else "fp32"
    grad = [m for m in config.methods if REGISTRY[m].needs_gradients]
    if grad and len({out[m] for m in grad}) > 1:  # one shared forward/backward: one dtype
        for m in grad:
            out[m] = "fp32"
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pearson r per map of two ``[..., H, W]`` stacks (maps constant in both: 1, in one only: 0)."""
    x, y = a.flatten(-2).double(), b.flatten(-2).double()
    x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    r = (x * y).sum(-1) / den.clamp_min(1e-300)
    both = (x.norm(dim=-1) == 0) & (y.norm(dim=-1) == 0)
    return torch.where(both, 1.0, torch.where(den == 0, 0.0, r)).reshape(-1).cpu().numpy()


def _judge(method: str, agree: tuple[np.ndarray, np.ndarray] | None, drop: tuple[np.ndarray, np.ndarray],
           r: np.ndarray) -> dict[str, Any]:
    """The check's figures for one method and whether bfloat16 is kept (with the reason when not)."""
    def within(pair: tuple[np.ndarray, np.ndarray]) -> float:
        a, b = pair
        both_nan = np.isnan(a) & np.isnan(b)
        close = np.abs(a - b) <= CHECK_TOLERANCE + 1e-12
        return float(np.mean(both_nan | close))

    agreement_share = within(agree) if agree is not None else float("nan")
    drop_share = within(drop)
    median_r = float(np.median(r)) if r.size else float("nan")
    reasons = []
    if agree is not None and agreement_share < CHECK_SHARE:
        reasons.append(f"top-1/top-2 agreement within {CHECK_TOLERANCE} for {agreement_share:.0%} of the "
                       f"images (< {CHECK_SHARE:.0%})")
    if drop_share < CHECK_SHARE:
        reasons.append(f"confidence drop within {CHECK_TOLERANCE} for {drop_share:.0%} of the images "
                       f"(< {CHECK_SHARE:.0%})")
    if not median_r >= CHECK_MEDIAN_R:
        reasons.append(f"median map r {median_r:.4f} < {CHECK_MEDIAN_R}")
    min_r = float(np.min(r)) if r.size else float("nan")
    return {"method": method, "candidate": "bf16", "agreement_within": agreement_share,
            "drop_within": drop_share, "median_r": median_r, "min_r": min_r,
            "precision": "fp32" if reasons else "bf16", "reason": "; ".join(reasons)}


def precision_check(config: RunConfig, model: torch.nn.Module, images: torch.Tensor, layer: str,
                    targets: Callable[[torch.Tensor], torch.Tensor],
                    contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
                    candidates: Mapping[str, str]) -> list[dict[str, Any]]:
    """Run the check of the module docstring on ``images`` (the check sample, on the run's device) for every
    method whose candidate is ``"bf16"`` → one record per method (float32-only methods get a record that
    says so)."""
    records: list[dict[str, Any]] = []
    methods = list(config.methods)
    for m in methods:
        if candidates[m] == "fp32":
            why = ("always float32" if m in FLOAT32_ONLY else
                   "float32 by the run's precision setting" if config.precision == "fp32" else
                   "no fast bfloat16 on this device for this method")
            records.append({"method": m, "candidate": "fp32", "precision": "fp32", "reason": why})
    trial = [m for m in methods if candidates[m] == "bf16"]
    if not trial:
        return records
    need = contrast if any(REGISTRY[m].needs_contrast for m in trial) else None
    runs = {}
    for name, amp in (("fp32", {m: None for m in trial}), ("bf16", {m: torch.bfloat16 for m in trial})):
        runs[name] = explain(model, images, layer, trial, targets, need, projection=config.projection,
                             batch_size=config.perturbation_batch, amp_dtype=amp)
    base, low = runs["fp32"], runs["bf16"]
    for m in trial:
        a, b = base.maps[m], low.maps[m]
        agree = None
        if a.shape[1] > 1:
            agree = tuple(topk_agreement(x[:, 0], x[:, 1], config.k, config.ties, config.sample_seed)
                          .double().cpu().numpy() for x in (a, b))
        drops = tuple(confidence_drop(model, images, x[:, 0].contiguous(), config.fidelity_k, config.fill,
                                      base.targets[:, 0], ties=config.ties, seed=config.sample_seed,
                                      batch_size=config.perturbation_batch).drop.double().cpu().numpy()
                      for x in (a, b))
        records.append({**_judge(m, agree, drops, pearson(a, b)), "n_images": int(images.shape[0])})
    return records


def decided(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Method → the precision it runs at (``"bf16"`` / ``"fp32"``) from the check's records."""
    return {r["method"]: r["precision"] for r in records}


def amp_of(decision: Mapping[str, str]) -> dict[str, torch.dtype | None]:
    """The engine's ``amp_dtype`` mapping of a decision."""
    return {m: DTYPES[p] for m, p in decision.items()}


def read_precision(path: Path, identity: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The stored check of a run folder when it was made for ``identity`` (run config and subject), else
    None."""
    file = Path(path) / PRECISION_FILE
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return data.get("records") if data.get("identity") == json.loads(json.dumps(identity)) else None


def write_precision(path: Path, identity: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path) / PRECISION_FILE) as tmp:
        Path(tmp).write_text(json.dumps({"identity": identity, "records": list(records)}, indent=1,
                                        default=float))


def load_precision(results_dir: str | Path) -> pd.DataFrame:
    """Every run's check under ``results_dir`` → one row per (run, method): the precision it ran at, the
    check's figures and the reason (empty when no run recorded one)."""
    rows = []
    for file in sorted(Path(results_dir).glob(f"*/{PRECISION_FILE}")):
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        run = data.get("identity", {}).get("run", {})
        for r in data.get("records", []):
            rows.append({"run": file.parent.name, "model": run.get("model"), "layer": run.get("layer"),
                         "seed": run.get("seed"), **r})
    return pd.DataFrame(rows)
