"""AdaptFormer: a bottleneck MLP parallel to each block's MLP, ``x + mlp(norm2(x)) + s * up(relu(down(x)))``.

Implemented with hooks: the residual stream entering ``norm2`` is caught and the scaled adapter
output is added to the block's output, which is exactly the parallel form.
"""

from __future__ import annotations

from torch import Tensor, nn

from dgseg.models.adapters.base import Adapter


class Bottleneck(nn.Module):
    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.act = nn.ReLU()
        self.up = nn.Linear(width, dim)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.act(self.down(x)))


class AdaptFormer(Adapter):
    def __init__(self, num_layers: int, embed_dim: int, width: int = 64, scale: float = 0.1) -> None:
        super().__init__()
        self.scale = scale
        self.mlps = nn.ModuleList(Bottleneck(embed_dim, width) for _ in range(num_layers))
        self._mid: dict[int, Tensor] = {}

    def attach(self, backbone: nn.Module) -> None:
        for i, blk in enumerate(backbone.vit.blocks):
            if not hasattr(blk, "norm2"):
                raise ValueError(f"AdaptFormer: block {i} of '{backbone.name}' has no norm2 before its MLP")
            blk.norm2.register_forward_pre_hook(self._catch(i))
            blk.register_forward_hook(self._add(i))

    def _catch(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            self._mid[i] = args[0]

        return hook

    def _add(self, i: int):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            mid = self._mid.pop(i)
            # SAM blocks run their MLP on B x HW x C tokens but return B x H x W x C (same element order)
            return out + self.scale * self.mlps[i](mid).reshape(out.shape)

        return hook
