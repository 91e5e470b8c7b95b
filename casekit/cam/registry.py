"""The method registry: one frozen record per CAM method, made by the :func:`method` decorator on the
method's raw-map function.

A method is one function ``MapInputs -> [B, T, h, w]`` (the un-rectified map at the layer's resolution;
:func:`casekit.cam.engine.finalize_maps` applies ReLU, upsampling and min–max scaling once for all methods),
decorated with :func:`method`, which records everything else about it: display name, **role** (``baseline``,
``proposed``, ``extension``), whether it is one of the paper's six methods, its colour in every figure, its
formula, what it needs (gradients, contrast classes, a gradient of a function of the logits), its oracle in
pytorch-grad-cam and its parameters with their defaults.  The built-in methods are defined next to their
formulas in :mod:`casekit.cam.methods` (gradient methods) and :mod:`casekit.cam.perturbation` (Score-CAM,
Ablation-CAM).  The engine runs the gradient methods from the shared forward pass and one batched backward
pass, then the gradient-free ones; the study, the report and the benchmark read what they need from here.

Derived selections: :data:`METHODS` (the paper's six, in the study's order), :data:`PAPER_BASELINES`,
:data:`PROPOSED`, :func:`all_methods`, :func:`methods_with`; a method registered at run time (an extension,
e.g. in a notebook) joins them at once, and never the paper's.
"""

from __future__ import annotations

import colorsys
import difflib
import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import nn

ROLES: tuple[str, ...] = ("baseline", "proposed", "extension")


@dataclass
class MapInputs:
    """Everything a raw-map function may read; all tensors on the images' device.

    ``target_grads [B, T, C, h, w]`` and ``contrast_grads [B, T, K, C, h, w]`` are set for the gradient
    methods only (``contrast_grads`` when contrast classes were given); ``output_grads [B, T, C, h, w]`` for a
    method with a ``grad_output`` rule: the gradient of the function of the logits it explains.
    ``layer_output`` is the layer's output in its own layout and ``channel_positions [C, m]`` where each
    channel of ``A`` lives in it (both ``None`` without a ``reshape_transform``).  ``params``: the method's
    parameters (its defaults, updated by the caller's).
    """

    model: nn.Module
    module: nn.Module
    images: torch.Tensor
    activations: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    contrast: torch.Tensor | None = None
    target_grads: torch.Tensor | None = None
    contrast_grads: torch.Tensor | None = None
    output_grads: torch.Tensor | None = None
    projection: str = "pooled"
    eps: float = 1e-8
    batch_size: int = 64
    amp_dtype: torch.dtype | None = None
    progress: bool = False
    layer_output: torch.Tensor | None = None
    channel_positions: torch.Tensor | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # e.g. {"ablation_mode": "separable"}


RawMap = Callable[[MapInputs], torch.Tensor]
#: ``(logits [B, C], targets [B, T], contrast [B, T, K] or None, params) -> [B, T, C]``: the gradient, with
#: respect to the logits, of the function of the logits a method explains (one row per image and target).
GradOutput = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", Mapping[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method (see the module docstring); made by :func:`method`.

    ``needs_gradients``: its map uses ``∂S/∂A`` (computed once, batched, for all such methods);
    ``needs_contrast``: it reads the contrast classes ``V(u)``; ``grad_output``: it explains a function of the
    logits other than one class score (its rows join the batched backward pass); ``oracle``: the class of
    pytorch-grad-cam that defines it (None: no oracle; the tests compare every method that names one);
    ``params``: parameter → default; ``order``: its place in the lists (the paper's six first, in the study's
    order).
    """

    name: str
    display: str
    role: str
    needs_gradients: bool
    raw_map: RawMap
    formula: str
    colour: str = ""
    paper: bool = False
    needs_contrast: bool = False
    grad_output: GradOutput | None = None
    oracle: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    order: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip().lower():
            raise ValueError(f"a method name is a lower-case string, got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"method {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.paper and self.role == "extension":
            raise ValueError(f"method {self.name!r}: an extension is not one of the paper's methods")
        if self.grad_output is not None and not self.needs_gradients:
            raise ValueError(f"method {self.name!r}: a grad_output rule needs needs_gradients=True")
        if not callable(self.raw_map):
            raise TypeError(f"method {self.name!r}: raw_map must be a function MapInputs -> [B, T, h, w]")
        if not self.formula:
            raise ValueError(f"method {self.name!r}: give its formula (one line, shown in the book)")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


REGISTRY: dict[str, MethodSpec] = {}
_LOOKUP: dict[str, str] = {}
_BUILT_IN: set[str] = set()


def _key(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "").replace(" ", "")


# Okabe–Ito / seaborn "colorblind" colours for methods without their own; then colours drawn from the name.
_SPARE_COLOURS = ("#d55e00", "#ca9161", "#fbafe4", "#949494", "#ece133", "#8c564b", "#17becf", "#7f7f7f")


def _free_colour(name: str) -> str:
    used = {s.colour.lower() for s in REGISTRY.values()}
    for c in _SPARE_COLOURS:
        if c not in used:
            return c
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hls_to_rgb(h, 0.45, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`REGISTRY` (a method without a colour gets a free one); a name or alias already
    taken is refused unless ``replace`` (never for a built-in method)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register takes a MethodSpec, got {type(spec).__name__}")
    keys = {_key(a) for a in (spec.name, spec.display, *spec.aliases)}
    taken = {k: _LOOKUP[k] for k in keys if k in _LOOKUP and _LOOKUP[k] != spec.name}
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"method {spec.name!r} is already registered (pass replace=True to redefine it)")
    if taken:
        raise ValueError(f"method {spec.name!r}: the names {sorted(taken)} already stand for "
                         f"{sorted(set(taken.values()))}")
    if spec.name in _BUILT_IN and replace:
        raise ValueError(f"{spec.name!r} is a built-in method of casekit; register yours under another name")
    if not spec.colour:
        object.__setattr__(spec, "colour", _free_colour(spec.name))
    REGISTRY[spec.name] = spec
    for k in keys:
        _LOOKUP[k] = spec.name
    return spec


def unregister(name: str) -> None:
    """Remove a method registered at run time (built-in methods stay)."""
    name = canonical_method(name)
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in method of casekit and cannot be removed")
    spec = REGISTRY.pop(name)
    for k in [k for k, v in _LOOKUP.items() if v == spec.name]:
        del _LOOKUP[k]


def method(name: str, display: str, *, role: str, formula: str, needs_gradients: bool, paper: bool = False,
           needs_contrast: bool = False, grad_output: GradOutput | None = None, colour: str = "",
           oracle: str | None = None, params: Mapping[str, Any] | None = None, aliases: tuple[str, ...] = (),
           order: int = 1000, built_in: bool = False) -> Callable[[RawMap], RawMap]:
    """Decorator: register the raw-map function it decorates as a method (the arguments are
    :class:`MethodSpec`'s).  The function is returned unchanged.

    >>> @ck.cam.registry.method("mymethod", "My-CAM", role="extension", needs_gradients=True,
    ...                         formula="Σ_c max_ij(g_u,c) A_c")
    ... def mymethod(x):
    ...     return torch.einsum("btc,bchw->bthw", x.target_grads.amax(dim=(-2, -1)), x.activations)
    """
    def register_it(fn: RawMap) -> RawMap:
        spec = MethodSpec(name, display, role, needs_gradients, fn, formula, colour, paper, needs_contrast,
                          grad_output, oracle, dict(params or {}), tuple(aliases), order)
        register(spec)
        if built_in:
            _BUILT_IN.add(spec.name)
        return fn
    return register_it


def all_methods() -> tuple[str, ...]:
    """Every registered method: the paper's six in the study's order, then the others by ``order``, name."""
    return tuple(s.name for s in sorted(REGISTRY.values(), key=lambda s: (not s.paper, s.order, s.name)))


def methods_with(*, role: str | None = None, paper: bool | None = None, gradients: bool | None = None,
                 contrast: bool | None = None) -> tuple[str, ...]:
    """The registered methods (in :func:`all_methods` order) that match every given property."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    out = []
    for m in all_methods():
        s = REGISTRY[m]
        if ((role is None or s.role == role) and (paper is None or s.paper == paper)
                and (gradients is None or s.needs_gradients == gradients)
                and (contrast is None or s.needs_contrast == contrast)):
            out.append(m)
    return tuple(out)


def canonical_method(method: str) -> str:
    """Canonical method name; accepts case, ``-``/``_``/space variants and display names
    ("Grad-CAM++" → "gradcam++", "Grad-CAM (diff)" → "gradcam-diff")."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {all_methods()}, got {type(method).__name__}")
    key = _key(method)
    if key not in _LOOKUP:
        close = difflib.get_close_matches(key, all_methods(), n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; choose one of {', '.join(all_methods())}")
    return _LOOKUP[key]


def spec(method: str) -> MethodSpec:
    """The record of ``method`` (any spelling :func:`canonical_method` accepts)."""
    return REGISTRY[canonical_method(method)]


def method_params(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A method's parameters: its defaults updated by ``given``; an unknown parameter is refused by name."""
    s = spec(name)
    given = dict(given or {})
    unknown = sorted(set(given) - set(s.params))
    if unknown:
        have = ", ".join(f"{k}={v!r}" for k, v in s.params.items()) or "none"
        raise ValueError(f"method {s.name!r} has no parameter {unknown[0]!r} (its parameters: {have})")
    return {**s.params, **given}


# The built-in methods register themselves where their formulas are (imported here so that the registry is
# complete whichever module is imported first).
from . import methods as _methods  # noqa: E402,F401
from . import perturbation as _perturbation  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    """The derived selections, computed when asked for (so that they hold every registered method, built in
    or added at run time): ``METHODS`` (the paper's six, in the study's order), ``PAPER_BASELINES``,
    ``PROPOSED``, ``ALL_METHODS``, ``EXTENSION_METHODS``, ``GRADIENT_METHODS``, ``CONTRAST_METHODS``,
    ``DISPLAY_NAMES``."""
    if name == "METHODS":
        return methods_with(paper=True)
    if name == "PAPER_BASELINES":
        return methods_with(paper=True, role="baseline")
    if name == "PROPOSED":
        return methods_with(paper=True, role="proposed")
    if name == "ALL_METHODS":
        return all_methods()
    if name == "EXTENSION_METHODS":
        return methods_with(paper=False)
    if name == "GRADIENT_METHODS":
        return frozenset(methods_with(gradients=True))
    if name == "CONTRAST_METHODS":
        return frozenset(methods_with(contrast=True))
    if name == "DISPLAY_NAMES":
        return {m: REGISTRY[m].display for m in all_methods()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
