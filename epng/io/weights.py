"""Load a ``.safetensors`` file into a module's own tensors, a few at a time.

The safetensors reader maps the file into memory and every page a copy reads stays resident
until the file is closed, so ``load_state_dict(load_file(path))`` peaks at two full copies of
the weights (the module's and the file's). `load_into` copies into the module's tensors in
groups of about `GROUP_BYTES` and closes the file after each group: loading needs the module
plus one group (or its largest tensor).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

GROUP_BYTES = 64 << 20


def _groups(sizes: dict[str, int]) -> list[list[str]]:
    """Names in file order cut into runs of at most `GROUP_BYTES` (a larger tensor alone)."""
    groups: list[list[str]] = [[]]
    total = 0
    for name, size in sizes.items():
        if groups[-1] and total + size > GROUP_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += size
    return groups


@torch.no_grad()
def load_into(module: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Copy every tensor of safetensors file ``path`` into ``module``'s parameter or buffer of
    the same name (cast to its dtype and device). Raises `RuntimeError` naming the tensors when
    a shape differs or, with ``strict``, when a name is in only one of the two; nothing is
    copied then."""
    own = module.state_dict()  # name -> tensor sharing storage with the parameter or buffer
    with safe_open(str(path), framework="pt") as file:
        names = list(file.keys())
        shapes = {name: tuple(file.get_slice(name).get_shape()) for name in names}
    problems = []
    if strict:
        if missing := sorted(own.keys() - shapes.keys()):
            problems.append(f"missing from the file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected := sorted(shapes.keys() - own.keys()):
            problems.append(f"not in the model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    shared = [name for name in names if name in own]
    problems += [
        f"{name}: shape {shapes[name]} in the file, {tuple(own[name].shape)} in the model"
        for name in shared
        if shapes[name] != tuple(own[name].shape)
    ]
    if problems:
        raise RuntimeError("; ".join(problems))
    for group in _groups({name: own[name].numel() * own[name].element_size() for name in shared}):
        with safe_open(str(path), framework="pt") as file:
            for name in group:
                own[name].copy_(file.get_tensor(name))
