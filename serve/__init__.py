"""creps.serve: a Deep Zoom canvas per seed and psi, every tile rendered natively by the runtime (no torch).

    from creps.runtime import Runtime
    from creps.serve import Canvas, TileKey, TileRenderer
    runtime = Runtime("bundles/ffhq256")
    renderer = TileRenderer(runtime, Canvas.of(runtime.model), cache_bytes=512 << 20)
    renderer.descriptor()                                   # the DZI XML
    tile = renderer.render(TileKey(seed=0, psi=0.7, level=12, col=3, row=5))
    tile.png, tile.window, tile.size, tile.etag             # == creps-run --window tile.window --size WxH
"""

from creps.serve.lines import LineCache
from creps.serve.pyramid import Canvas, window_header
from creps.serve.tiles import BadTileRequest, Tile, TileKey, TileNotFound, TileRenderer

__all__ = ["BadTileRequest", "Canvas", "LineCache", "Tile", "TileKey", "TileNotFound", "TileRenderer",
           "window_header"]
