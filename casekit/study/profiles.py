"""The studies per profile: the demo study (:func:`demo_configs`), the paper's (:func:`paper_configs`),
:func:`run_study` (what ``make book PROFILE=...`` runs), the inputs a profile needs from disk
(:func:`missing_inputs`), and reading stored results back (:func:`load_results`).

Imports: :mod:`casekit.subjects`, :mod:`casekit._io`, :mod:`.config`, :mod:`.runner`, :mod:`.store`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .._io import cache_dir
from ..subjects import data, finetune, models, reference
from ..subjects.zoo import FAMILIES
from .config import (
    ALL_IMAGES,
    CIFAR100_HELDOUT,
    CIFAR100_MODELS,
    DEMO_N_IMAGES,
    MAP_KEY,
    PAPER_DATASET_SIZES,
    PAPER_N_IMAGES,
    PAPER_STUDY_MODELS,
    SPARSITY_KEY,
    STUDY_SEEDS,
    RunConfig,
)
from .runner import Results, concat_runs, read_sample, run_all, samples_frame
from .store import ResultStore


def demo_configs(n_images: int = DEMO_N_IMAGES, seeds: Sequence[int] = STUDY_SEEDS,
                 families: Sequence[str] | None = None, norm5: bool = True,
                 **overrides: Any) -> list[RunConfig]:
    """The demo study: RQ1 + RQ2 + sparsity on every family's final conv; DenseNet also on ``norm5``;
    DenseNet seeds other than 0 with RQ1 only (Figure 4's seed robustness).  ``overrides`` go to every
    config."""
    families = tuple(FAMILIES if families is None else families)
    configs = [RunConfig(model=f, profile="demo", n_images=n_images, **overrides) for f in families]
    if "densenet" in families:
        if norm5:
            configs.append(RunConfig(model="densenet", profile="demo", layer="norm5", n_images=n_images,
                                     **overrides))
        for s in seeds:
            if s != 0:
                configs.append(RunConfig(model="densenet", profile="demo", seed=s, n_images=n_images,
                                         rq2=False,
                                         sparsity_layers=(), **overrides))
    return configs


def run_demo(n_images: int = DEMO_N_IMAGES, *, results_dir: str | os.PathLike | None = None,
             recompute: bool = False,
             progress: bool = True, seeds: Sequence[int] = STUDY_SEEDS, families: Sequence[str] | None = None,
             norm5: bool = True, **overrides: Any) -> Results:
    """:func:`run_all` of :func:`demo_configs` (results in ``results/demo/`` unless ``results_dir`` is
    given)."""
    configs = demo_configs(n_images, seeds, families, norm5, **overrides)
    return run_all(configs, results_dir=results_dir, recompute=recompute, progress=progress)


def paper_configs(n_images: int = PAPER_N_IMAGES, seeds: Sequence[int] = STUDY_SEEDS,
                  models: Sequence[str] | None = None,
                  norm5: bool = True, seed_study: bool = True, **overrides: Any) -> list[RunConfig]:
    """The paper's study: RQ1 + RQ2 + sparsity on the four ImageNet models' attribution layers (1000 correctly
    classified validation images each), DenseNet-201 also at ``norm5``, and RQ1 on the five CIFAR-100
    DenseNet-201 seeds (``densenet201-cifar100``, checkpoints of :mod:`casekit.subjects.finetune`)."""
    models = tuple(PAPER_STUDY_MODELS if models is None else models)
    configs = [RunConfig(model=m, profile="paper", n_images=n_images, **overrides) for m in models]
    if "densenet201" in models and norm5:
        configs.append(RunConfig(model="densenet201", profile="paper", layer="norm5", n_images=n_images,
                                 **overrides))
    if seed_study:  # CIFAR-100: 5,000 test images held out (stratified) for the confusion, 5,000 evaluated
        cifar = {"heldout": CIFAR100_HELDOUT, **overrides}
        for s in seeds:
            configs.append(RunConfig(model="densenet201-cifar100", profile="paper", seed=s, n_images=n_images,
                                     rq2=False, sparsity_layers=(), **cifar))
    return configs


#: The cifar10 profile's networks (:data:`casekit.subjects.reference.NAMES`), in its tables' column order.
CIFAR10_STUDY_MODELS: tuple[str, ...] = tuple(reference.NAMES)
#: Images per cifar10 run, drawn with the run's seed among the correctly classified images of the evaluated
#: half (1,000 images; 810-840 correct per network).  500 is the size at which resampling a 750-image run
#: reproduced every chance-reference verdict of chapter 08 (30 images changed 5-8 of 20); ``"all"`` (the
#: book's ``--scale full``) takes every correct image.  See :func:`cifar10_configs` for the time it takes.
CIFAR10_N_IMAGES = 500
#: What the cifar10 profile has no counterpart for (said once, in the book's profile summaries).
CIFAR10_NOTE = (
    "The cifar10 profile has no ground-truth object masks (the evidence and unique-part analyses are "
    "demo-only), one checkpoint per network (no five-seed robustness study) and no sibling classes (no "
    "true-vs-sibling comparison); its contrast sets come from the confusion matrix of a seeded, stratified "
    "held-out half of the images, disjoint from the evaluated half.")
PROFILE_NAMES = ("demo", "paper", "cifar10")


def cifar10_configs(n_images: int = CIFAR10_N_IMAGES, models: Sequence[str] | None = None,
                    norm5: bool = True, **overrides: Any) -> list[RunConfig]:
    """The cifar10 study: RQ1 (top-1 vs top-2, all six methods) + RQ2 (fidelity) + sparsity on every network's
    final conv; DenseNet-BC-40 also at ``norm5`` (its final BatchNorm) and ShuffleNetV2 at its ``conv5.1``
    (the final BatchNorm in place of ``norm5``).  One checkpoint each (seed 0); no siblings, no masks.

    Time on the project's 2-core CPU (idle, bf16 Score-CAM with its per-run fp32 check): about 1.6 s per
    image summed over the six runs (``make bench BENCH_ARGS="--study cifar10 --amp bf16"``); ShuffleNetV2's
    1,024 and the DenseNet's 456 channels make Score-CAM most of it."""
    models = tuple(CIFAR10_STUDY_MODELS if models is None else models)
    configs = [RunConfig(model=m, profile="cifar10", n_images=n_images, **overrides) for m in models]
    if norm5:
        for m in models:
            if "norm5" in reference.NETWORKS[reference.canonical_name(m)].layers:
                configs.append(RunConfig(model=m, profile="cifar10", layer="norm5", n_images=n_images,
                                         **overrides))
    return configs


def study_configs(profile: str = "demo", **options: Any) -> list[RunConfig]:
    """:func:`demo_configs`, :func:`paper_configs` or :func:`cifar10_configs` by profile name (what
    ``make book PROFILE=...`` runs)."""
    if profile == "demo":
        return demo_configs(**options)
    if profile == "paper":
        return paper_configs(**options)
    if profile == "cifar10":
        return cifar10_configs(**options)
    raise ValueError(f"profile must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")


def missing_inputs(profile: str = "demo", configs: Sequence[RunConfig] | None = None) -> list[str]:
    """What a profile's study needs from disk but does not find: one message per missing item (pretrained
    weights, ImageNet validation folder, CIFAR-100, fine-tuned checkpoints), each saying where casekit looked
    and how to provide it.  Empty when everything is there; always empty on the demo profile (it makes its own
    data).

    Also the configurations themselves (:func:`config_problems`: e.g. ``heldout`` ≥ the dataset's size).
    Cheap: it checks files and folders, it loads no weights.  ``configs`` default :func:`study_configs`."""
    configs = study_configs(profile) if configs is None else list(configs)
    if all(c.profile == "demo" for c in configs):
        return []
    problems: list[str] = config_problems(configs)
    nets = list(dict.fromkeys(c.model for c in configs if c.profile == "cifar10"))
    if nets:
        problems.extend(_cifar10_missing(nets))
    imagenet = cifar = False
    seeds_missing: list[int] = []
    folder = cache_dir("finetune")
    for c in configs:
        if c.profile != "paper":
            continue
        if c.model.lower() in ("densenet201-cifar100", "densenet201_cifar100"):
            cifar = True
            if not finetune.checkpoint_path(folder, c.seed).is_file() and c.seed not in seeds_missing:
                seeds_missing.append(c.seed)
            continue
        imagenet = True
        _, spec = models.paper_model_spec(c.model)
        entry, path = models.torchvision_weights_file(spec.builder)
        if not path.is_file():
            problems.append(str(models.missing_torchvision_weights(spec.display, spec.builder, entry.name,
                                                                    entry.url, path)))
    if seeds_missing:
        seeds = " ".join(str(x) for x in seeds_missing)
        problems.append(
            f"casekit: the fine-tuned DenseNet-201 (CIFAR-100) checkpoints of seed(s) {seeds} do not exist.\n"
            f"  missing: {', '.join(finetune.checkpoint_path(folder, x).name for x in seeds_missing)}\n"
            f"  looked in: {folder} ($CASEKIT_CACHE/finetune)\n"
            f"  to provide them: run  python -m casekit.subjects.finetune --seed {seeds}  (with CIFAR-100 "
            "in place; a GPU is advisable, see the book's 'Profiles' page), which writes them there, or "
            "copy them there.")
    for needed, load in ((imagenet, data.imagenet_val), (cifar, lambda: data.cifar100(train=False))):
        if needed:
            try:
                load()
            except data.MissingDataError as err:
                problems.append(str(err))
    return list(dict.fromkeys(problems))


def config_problems(configs: Sequence[RunConfig]) -> list[str]:
    """Paper-profile configurations that cannot run as written, one message each: ``heldout`` leaves no
    image of the evaluation set (ImageNet validation: 50,000; CIFAR-100 test: 10,000), or fewer images than
    ``n_images`` (the sample is drawn among the rest, and only correctly classified ones qualify)."""
    problems = []
    for c in configs:
        if c.profile != "paper":
            continue
        name = "cifar100" if c.model.lower() in CIFAR100_MODELS else "imagenet"
        size = PAPER_DATASET_SIZES[name]
        label = "CIFAR-100 test set" if name == "cifar100" else "ImageNet validation set"
        if c.heldout >= size:
            problems.append(f"casekit: run {c.name}: heldout={c.heldout} holds out the whole {label} "
                            f"({size:,} images) for the confusion matrix and leaves none to evaluate; use "
                            f"heldout < {size} (the study uses "
                            f"{CIFAR100_HELDOUT if name == 'cifar100' else 10_000:,}).")
        elif c.n_images != ALL_IMAGES and size - c.heldout < c.n_images:
            problems.append(f"casekit: run {c.name}: n_images={c.n_images} exceeds the {size - c.heldout:,} "
                            f"images of the {label} left after heldout={c.heldout}; lower one of them.")
    return problems


def _cifar10_missing(nets: Sequence[str]) -> list[str]:
    """The cifar10 profile's missing files (networks and test images), one message naming them all.  Where
    the machine is online (not ``$CASEKIT_OFFLINE``), missing files are downloaded (hash-checked) first."""
    found = reference.missing(nets, None, download=None)
    try:
        reference.images()
    except data.MissingDataError as err:
        found.append(str(err))
    if found:
        found.insert(0, "casekit: the cifar10 profile needs the pretrained CIFAR-10 networks "
                     f"({', '.join(nets)}) and CIFAR-10 test images. Put the folder shared/reference/cifar10 "
                     "beside or above the checkout, or its files into $CASEKIT_DATA (default: the checkout's "
                     "data/ folder, see data/README.md), or run  python -m casekit.subjects.fetch cifar10  "
                     "where the machine is online (files and sha256 in data/manifest.json).")
    return found


def run_study(profile: str = "demo", *, results_dir: str | os.PathLike | None = None, recompute: bool = False,
              progress: bool = True, **options: Any) -> Results:
    """Run (or resume, or just load) the whole study of a profile; ``options`` go to :func:`study_configs`
    (e.g. ``n_images``, ``seeds``, ``families``/``models``, and any :class:`RunConfig` field such as
    ``device``)."""
    return run_all(study_configs(profile, **options), results_dir=results_dir, recompute=recompute,
                   progress=progress)


def load_results(results_dir: str | os.PathLike) -> Results:
    """Read every run stored under ``results_dir`` (no computing)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder {root}; run the experiments first "
                                "(casekit.experiments.run_demo)")
    maps, sparsity, samples = [], [], []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        samples.append(read_sample(run_dir))
        if (run_dir / "maps" / "store.json").exists():
            maps.append(ResultStore(run_dir / "maps", MAP_KEY).read())
        if (run_dir / "sparsity" / "store.json").exists():
            sparsity.append(ResultStore(run_dir / "sparsity", SPARSITY_KEY).read())
    if not maps and not sparsity:
        raise FileNotFoundError(f"{root} holds no result stores")
    return Results(concat_runs(maps, MAP_KEY), concat_runs(sparsity, SPARSITY_KEY),
                   stored_samples=samples_frame(samples))


def profile_models(profile: str) -> tuple[str, ...]:
    """The models of a profile's study: the demo families, the paper's four ImageNet models, or the four
    CIFAR-10 networks."""
    if profile == "demo":
        return tuple(FAMILIES)
    if profile == "paper":
        return PAPER_STUDY_MODELS
    if profile == "cifar10":
        return CIFAR10_STUDY_MODELS
    raise ValueError(f"profile must be one of {', '.join(PROFILE_NAMES)}, got {profile!r}")


def default_n_images(profile: str) -> int:
    """Images per run of a profile's study (300 demo, 1000 paper, 500 cifar10)."""
    return {"demo": DEMO_N_IMAGES, "cifar10": CIFAR10_N_IMAGES}.get(profile, PAPER_N_IMAGES)


def study_config(profile: str = "demo", model: str | None = None, *, layer: str = "final_conv", seed: int = 0,
                 **options: Any) -> RunConfig:
    """The :class:`RunConfig` that :func:`run_study` ``(profile, **options)`` uses for one model, layer and
    seed (default: the profile's first model), so that figures explain images exactly as the study did."""
    model = profile_models(profile)[0] if model is None else model
    configs = study_configs(profile, **options)
    found = [c for c in configs if c.model == model and c.layer == layer and c.seed == seed]
    if not found:
        have = ", ".join(f"{c.model}/seed {c.seed}/{c.layer}" for c in configs)
        raise ValueError(f"the {profile} study has no run for model={model!r}, layer={layer!r}, seed={seed} "
                         f"(it has {have})")
    return found[0]


