"""A network cut at a tap: a module whose forward computes only what one site needs and returns it.

The hook tap (`taps.read_sites`) ends a forward pass by raising once the site has fired, which a
compiled graph has to break around. Here the network is traced once with torch.fx (timm's
untraceable modules and functions kept whole, as its own feature extraction does), the graph's
output becomes the site's tensor and everything after it is dropped. The whole optimization step
(augmentation, preprocessing, the cut forward, the feature, TV, the loss) can then be one compiled
graph. Only a site read from a module's output on its first call is cut this way; any other site,
or a network torch.fx cannot trace, gets None and a reason, and the caller keeps the hook tap.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from sweep.models.anatomy import Block
from sweep.models.taps import reduce_features, to_feature_layout

log = logging.getLogger(__name__)


class CutNetwork(nn.Module):
    """(B, 3, S, S) images -> (B, width) features of one (block, site), as `read_features` gives them."""

    def __init__(self, graph: nn.Module, module: nn.Module, block: Block, site: str):
        super().__init__()
        self.graph = graph
        self.block, self.site = block, block.site(site)
        self.__dict__["_site_module"] = module  # not a submodule: the graph already holds its weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.graph(x)["site"]
        raw = raw[0] if isinstance(raw, (tuple, list)) else raw
        return reduce_features(to_feature_layout(raw, self.site, self.block, self.__dict__["_site_module"]),
                               self.block)


def cut_at(net: nn.Module, block: Block, site: str) -> tuple[CutNetwork | None, str]:
    """The network cut after (block, site), or (None, why not). Cached on `net` per (block, site)."""
    key = (block.name, block.index, site)
    cache = net.__dict__.setdefault("_sweep_cuts", {})
    if key not in cache:
        cache[key] = _trace(net, block, site)
    return cache[key]


def _trace(net: nn.Module, block: Block, site_name: str) -> tuple[CutNetwork | None, str]:
    site = block.site(site_name)
    if site.hook != "output" or site.call != 0:
        return None, f"site {site_name} reads a module's {site.hook} (call {site.call}); only outputs are cut"
    modules = dict(net.named_modules())
    if site.module not in modules:
        return None, f"module {site.module} is not in this network"
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
        from torchvision.models.feature_extraction import create_feature_extractor

        # A non-leaf module's name stands for the last operation inside it (torchvision's rule).
        graph = create_feature_extractor(net, return_nodes={site.module: "site"}, tracer_kwargs={
            "leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())})
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: keep the hook tap
        return None, f"torch.fx cannot trace it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    graph.eval()
    return CutNetwork(graph, modules[site.module], block, site_name), ""
