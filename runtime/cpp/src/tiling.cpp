#include "tiling.hpp"

#include <algorithm>
#include <cmath>

namespace creps::detail {
namespace {

constexpr std::int64_t FLOAT = 4;
constexpr TileSize DEFAULT_TILE{128, 64};
constexpr std::int64_t DEFAULT_LINES = 256;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
std::int64_t floor_div(std::int64_t a, std::int64_t b) {  // Python's //
    std::int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

[[noreturn]] void plan_error(const std::string& message) { throw Error(message); }

void check_range(const std::string& name, std::int64_t value, Range limits) {
    if (value < limits.first || value > limits.second)
        plan_error(name + " " + std::to_string(value) + " is outside the backend's range " +
                   std::to_string(limits.first) + ".." + std::to_string(limits.second) +
                   " (rebuild the engines with a wider profile, or change the size, tile or batch)");
}

std::vector<Slice> split_at_most(std::int64_t n, std::int64_t longest) { return split(n, ceil_div(n, longest)); }

std::int64_t longest_part(std::int64_t n, std::int64_t parts) { return ceil_div(n, std::min(parts, n)); }

TileSize pick_tile(std::int64_t width, std::int64_t height, std::int64_t batch, const ModelSizes& model,
                   std::optional<TileSize> tile, std::int64_t budget, const Limits& limits) {
    TileSize t = tile ? *tile : limits.default_tile(batch);
    std::int64_t tile_w = std::min<std::int64_t>(t.width, width), tile_h = std::min<std::int64_t>(t.height, height);
    std::int64_t max_pixels = floor_div(budget, batch * pixel_work_bytes(model));
    if (tile_w * tile_h > max_pixels) {
        if (tile)
            plan_error("tile " + std::to_string(tile_w) + "x" + std::to_string(tile_h) +
                       " needs more than the memory budget; use a smaller --tile");
        TileSize shrunk = shrink({static_cast<int>(tile_w), static_cast<int>(tile_h)}, max_pixels);
        tile_w = shrunk.width;
        tile_h = shrunk.height;
    }
    if (tile) {  // a requested tile must fit the backend; the default one shrinks to it
        check_range("tile width", tile_w, limits.tile_width);
        check_range("tile height", tile_h, limits.tile_height);
    }
    return {static_cast<int>(std::min(tile_w, limits.tile_width.second)),
            static_cast<int>(std::min(tile_h, limits.tile_height.second))};
}

}  // namespace

TileSize Limits::default_tile(std::int64_t batch) const {
    if (tile_width != UNLIMITED && tile_height != UNLIMITED)
        return {static_cast<int>(tile_width.second), static_cast<int>(tile_height.second)};
    return shrink(DEFAULT_TILE, std::int64_t{DEFAULT_TILE.width} * DEFAULT_TILE.height / batch);
}

std::int64_t Limits::default_lines(std::int64_t batch) const {
    if (line_height != UNLIMITED && line_width != UNLIMITED) return line_height.second + line_width.second;
    return std::max<std::int64_t>(2, DEFAULT_LINES / batch);
}

TileSize Plan::tile() const {
    std::int64_t w = 0, h = 0;
    for (const Slice& s : columns) w = std::max(w, s.size());
    for (const Slice& s : bands) h = std::max(h, s.size());
    return {static_cast<int>(w), static_cast<int>(h)};
}

std::vector<Slice> split(std::int64_t n, std::int64_t parts) {
    std::vector<Slice> slices;
    for (std::int64_t i = 0; i < parts; ++i) slices.push_back({n * i / parts, n * (i + 1) / parts});
    return slices;
}

TileSize shrink(TileSize tile, std::int64_t max_pixels) {
    std::int64_t area = std::int64_t{tile.width} * tile.height;
    if (area <= max_pixels) return tile;
    double scale = std::sqrt(static_cast<double>(max_pixels) / static_cast<double>(area));
    return {std::max(1, static_cast<int>(tile.width * scale)), std::max(1, static_cast<int>(tile.height * scale))};
}

std::int64_t line_feature_bytes(const ModelSizes& m) { return FLOAT * m.num_blocks * m.biline_channels * m.rank; }

std::int64_t line_work_bytes(const ModelSizes& m) {
    std::int64_t widest = std::min(m.channel_base / 4, m.channel_max);
    return FLOAT * m.rank * (3 * widest + 2 * m.num_blocks * m.biline_channels);
}

std::int64_t pixel_work_bytes(const ModelSizes& m) {
    std::int64_t c = m.biline_channels;
    return FLOAT * (m.num_blocks * c + 3 * 4 * c + 2 * m.img_channels);
}

std::vector<LineChunk> plan_lines(std::int64_t width, std::int64_t height, std::int64_t max_lines,
                                  const Limits& limits, std::int64_t workers) {
    std::int64_t calls = std::max({ceil_div(height + width, max_lines), ceil_div(height, limits.line_height.second),
                                   ceil_div(width, limits.line_width.second)});
    while (longest_part(height, calls) + longest_part(width, calls) > max_lines) ++calls;
    calls = std::max(calls, std::min(ceil_div(calls, workers) * workers, std::max(height, width)));
    std::vector<Slice> ys_parts = split(height, std::min(calls, height));
    std::vector<Slice> xs_parts = split(width, std::min(calls, width));
    Slice pad_ys{0, std::min(height, std::max<std::int64_t>(1, limits.line_height.first))};
    Slice pad_xs{0, std::min(width, std::max<std::int64_t>(1, limits.line_width.first))};
    std::vector<LineChunk> chunks;
    for (std::int64_t i = 0; i < calls; ++i) {
        bool no_ys = i >= static_cast<std::int64_t>(ys_parts.size());
        bool no_xs = i >= static_cast<std::int64_t>(xs_parts.size());
        chunks.push_back({no_ys ? pad_ys : ys_parts[i], no_xs ? pad_xs : xs_parts[i], no_ys, no_xs});
    }
    for (const LineChunk& chunk : chunks) {
        check_range("line chunk height", chunk.ys.size(), limits.line_height);
        check_range("line chunk width", chunk.xs.size(), limits.line_width);
    }
    return chunks;
}

Plan make_plan(const ModelSizes& model, std::int64_t width, std::int64_t height, std::int64_t batch,
               std::optional<TileSize> tile, std::optional<std::int64_t> max_memory,
               std::optional<std::int64_t> max_lines, const Limits& limits, std::int64_t workers) {
    check_range("batch", batch, limits.batch);
    if (tile && std::min(tile->width, tile->height) < 1)
        plan_error("tile " + std::to_string(tile->width) + "x" + std::to_string(tile->height) +
                   ": both sides must be at least 1");
    std::int64_t features = batch * (height + width) * line_feature_bytes(model);
    std::int64_t line_bytes = batch * line_work_bytes(model);
    std::int64_t smallest = std::max(line_bytes * 2, batch * pixel_work_bytes(model));
    std::int64_t budget = max_memory ? floor_div(*max_memory - features, workers) : std::int64_t{1} << 62;
    if (budget < smallest) {
        std::int64_t need = features + workers * smallest;
        plan_error("memory budget " + std::to_string(*max_memory) + " bytes is below the " + std::to_string(need) +
                   " bytes a " + std::to_string(width) + "x" + std::to_string(height) + " image of batch " +
                   std::to_string(batch) + " needs at least (its line features alone take " +
                   std::to_string(features) + ")");
    }
    std::int64_t lines = std::max<std::int64_t>(2, std::min(max_lines.value_or(limits.default_lines(batch)),
                                                            floor_div(budget, line_bytes)));
    Plan plan{width, height, batch, plan_lines(width, height, lines, limits, max_lines ? 1 : workers), {}, {}, 0};
    TileSize t = pick_tile(width, height, batch, model, tile, budget, limits);
    plan.bands = split_at_most(height, t.height);
    plan.columns = split_at_most(width, t.width);
    std::int64_t tiles = static_cast<std::int64_t>(plan.bands.size() * plan.columns.size());
    if (!tile && tiles < workers)  // keep every worker busy on small images
        plan.columns = split(width, std::min(width, ceil_div(workers, static_cast<std::int64_t>(plan.bands.size()))));
    for (const Slice& part : plan.bands) check_range("tile height", part.size(), limits.tile_height);
    for (const Slice& part : plan.columns) check_range("tile width", part.size(), limits.tile_width);
    std::int64_t longest_call = 0;
    for (const LineChunk& c : plan.line_chunks) longest_call = std::max(longest_call, c.ys.size() + c.xs.size());
    std::int64_t work =
        std::max(longest_call * line_bytes, std::int64_t{t.width} * t.height * batch * pixel_work_bytes(model));
    plan.estimated_bytes = features + workers * work;
    return plan;
}

}  // namespace creps::detail
