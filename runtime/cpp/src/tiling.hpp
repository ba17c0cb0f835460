// The work plan of one image, exactly as creps.runtime.tiling plans it (same request, same tiles): batch,
// line chunks and pixel tiles sized from a memory budget. See runtime/tiling.py for the why of each number.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "creps/runtime.hpp"

namespace creps::detail {

using Range = std::pair<std::int64_t, std::int64_t>;  // inclusive (min, max) extent
constexpr Range UNLIMITED{1, std::int64_t{1} << 62};

struct Slice {
    std::int64_t start, stop;
    std::int64_t size() const { return stop - start; }
};

struct Limits {
    Range batch = UNLIMITED, line_height = UNLIMITED, line_width = UNLIMITED, tile_height = UNLIMITED,
          tile_width = UNLIMITED;
    TileSize default_tile(std::int64_t batch) const;
    std::int64_t default_lines(std::int64_t batch) const;
};

struct LineChunk {
    Slice ys, xs;
    bool pad_ys = false, pad_xs = false;  // that side only fills the call's shape
};

struct ModelSizes {  // the model fields the plan reads
    std::int64_t num_blocks, biline_channels, rank, img_channels, channel_base, channel_max;
};

struct Plan {
    std::int64_t width, height, batch;
    std::vector<LineChunk> line_chunks;
    std::vector<Slice> bands, columns;
    std::int64_t estimated_bytes = 0;
    TileSize tile() const;  // the largest tile
};

std::vector<Slice> split(std::int64_t n, std::int64_t parts);
TileSize shrink(TileSize tile, std::int64_t max_pixels);
std::int64_t line_feature_bytes(const ModelSizes& m);
std::int64_t line_work_bytes(const ModelSizes& m);
std::int64_t pixel_work_bytes(const ModelSizes& m);
std::vector<LineChunk> plan_lines(std::int64_t width, std::int64_t height, std::int64_t max_lines,
                                  const Limits& limits, std::int64_t workers);
// max_memory and max_lines: nullopt as Python's None.
Plan make_plan(const ModelSizes& model, std::int64_t width, std::int64_t height, std::int64_t batch,
               std::optional<TileSize> tile, std::optional<std::int64_t> max_memory,
               std::optional<std::int64_t> max_lines, const Limits& limits, std::int64_t workers);

}  // namespace creps::detail
