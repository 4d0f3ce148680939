"""The stylizer backends, declared by name: one row per backend.

Contract: a leaf module (it imports no other stylecam module), so ``styles.py`` (which validates
presets) and ``base.create_backend`` (which builds backends) can read it while the backends
themselves import ``styles`` and ``base``: the backends are found by module name here and
imported on first use, never imported back by the modules they depend on.

Adding a backend: one row here, a module with the backend class, and a params module that calls
``styles.register_backend_params(name, validator)`` when imported. The params module must stay
light (no torch): every preset is validated when the styles load.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    #: ``"module:Class"`` of the backend; imported only when a style of it runs.
    backend: str
    #: The module that registers the backend's params validator on import.
    params: str
    #: Which of ``create_backend``'s options the class takes: None, all of them (``bundle``,
    #: ``device``, ``batch_size``...); else only these names (the rest are not its business).
    options: tuple[str, ...] | None = None


BACKENDS: dict[str, BackendEntry] = {
    "classic": BackendEntry("stylecam.core.stylize.classic:ClassicBackend", "stylecam.core.stylize.classic",
                            options=("steady",)),
    "neural": BackendEntry("stylecam.core.stylize.neural:NeuralBackend", "stylecam.core.stylize.params",
                           options=("steady", "device")),
    "diffusion": BackendEntry("stylecam.core.stylize.diffusion:DiffusionBackend", "stylecam.core.stylize.params"),
}


def options_for(name: str, options: dict) -> dict:
    """The part of ``options`` the backend ``name`` takes (``steady`` only for the CPU backends)."""
    wanted = BACKENDS[name].options
    if wanted is None:
        return {k: v for k, v in options.items() if k != "steady"}
    return {k: v for k, v in options.items() if k in wanted}


#: The backend that paints any style on a ``stylecam serve`` (``create_backend(..., server=URL)``);
#: by name, since the remote client itself runs a runner-like hub and imports ``base``.
REMOTE_BACKEND = "stylecam.core.remote.client:RemoteBackend"


def remote_backend_class() -> type:
    module, _, attr = REMOTE_BACKEND.partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_class(name: str) -> type:
    """The backend class of ``name``. Raises KeyError (unknown name) or ImportError (a backend
    whose dependencies this build lacks)."""
    module, _, attr = BACKENDS[name].backend.partition(":")
    return getattr(importlib.import_module(module), attr)


def import_params_modules(registered: set[str] | frozenset[str] = frozenset()) -> None:
    """Import the params module of every backend not yet in ``registered``; a backend whose
    params module is absent from this build is left out (its presets then say "unknown
    backend")."""
    for name, entry in BACKENDS.items():
        if name in registered:
            continue
        try:
            importlib.import_module(entry.params)
        except ImportError as e:
            if not (e.name and entry.params.startswith(e.name)):
                raise  # present but broken: say so rather than hide it
