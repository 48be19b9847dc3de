"""dgseg's parameters under an official implementation's names, for mmengine's optimizer constructor
(test_oracle_optim.py: Rein; test_oracle_vltseg_optim.py: VLTSeg)."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

TORCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def official_view(model: nn.Module, official_name: Callable[[str], str], trainable_only: bool = False) -> nn.Module:
    """A module tree holding ``model``'s own Parameter objects under ``official_name(name)``. The owner at an
    official path is a shallow copy of the dgseg module that owns those parameters (its class kept, so
    mmengine's own ``isinstance`` norm test decides), holding only them; where several dgseg modules map onto
    one path (timm's ``q_proj.bias`` as EVA-CLIP's ``attn.q_bias``), none may be a norm and the owner is a
    bare Module."""
    owners: dict[str, tuple[list[nn.Module], dict]] = {}
    for mod_name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if trainable_only and not p.requires_grad:
                continue
            path, _, leaf = official_name(f"{mod_name}.{pname}").rpartition(".")
            mods, params = owners.setdefault(path, ([], {}))
            if mod not in mods:
                mods.append(mod)
            params[leaf] = p
    root = nn.Module()
    for path in sorted(owners, key=lambda s: s.count(".")):  # parents before children
        mods, params = owners[path]
        assert len(mods) == 1 or not any(isinstance(m, TORCH_NORMS) for m in mods), f"{path}: a norm and another"
        holder = copy.copy(mods[0]) if len(mods) == 1 else nn.Module()
        holder.__dict__.update(_parameters=dict(params), _modules={}, _buffers={})
        node, parts = root, path.split(".")
        for part in parts[:-1]:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        assert parts[-1] not in node._modules, path
        node.add_module(parts[-1], holder)
    return root
