"""A static, browsable atlas of a results root (see `build` for the site's layout)."""

from sweep.views.atlas.build import build_atlas
from sweep.views.atlas.publish import SiteWriter
from sweep.views.atlas.render import href, slug

__all__ = ["SiteWriter", "build_atlas", "href", "slug"]
