// Plans against creps.runtime.tiling.make_plan (same request, same chunks and tiles), and the invariants
// every plan keeps: chunks and tiles cover the image exactly once, within the backend's limits.
#include "references.hpp"
#include "tiling.hpp"

using namespace creps::detail;
using namespace creps::test;

namespace {

Range range(const nlohmann::json& r) { return {r[0].get<std::int64_t>(), r[1].get<std::int64_t>()}; }

struct Request {
    ModelSizes model;
    std::int64_t width, height, batch, workers;
    std::optional<creps::TileSize> tile;
    std::optional<std::int64_t> memory;
    Limits limits;
};

Request request_of(const nlohmann::json& c) {
    const auto& m = c["model"];
    ModelSizes model{m["num_blocks"], m["biline_channels"], m["rank"], m["img_channels"], m["channel_base"],
                     m["channel_max"]};
    Request r{model,
              c["width"], c["height"], c["batch"], c["workers"], std::nullopt, std::nullopt, {}};
    if (!c["tile"].is_null()) r.tile = creps::TileSize{c["tile"][0], c["tile"][1]};
    if (!c["max_memory"].is_null()) r.memory = c["max_memory"].get<std::int64_t>();
    const auto& l = c["limits"];
    r.limits = {range(l["batch"]), range(l["line_height"]), range(l["line_width"]), range(l["tile_height"]),
                range(l["tile_width"])};
    return r;
}

Plan plan_of(const Request& r) {
    return make_plan(r.model, r.width, r.height, r.batch, r.tile, r.memory, std::nullopt, r.limits, r.workers);
}

// Each index of [0, n) in exactly one slice, in order.
void expect_cover(const std::vector<Slice>& parts, std::int64_t n) {
    std::int64_t at = 0;
    for (const Slice& s : parts) {
        EXPECT_EQ(s.start, at);
        EXPECT_GT(s.size(), 0);
        at = s.stop;
    }
    EXPECT_EQ(at, n);
}

}  // namespace

TEST(Tiling, PlansEqualPythonsForTheSameRequest) {
    size_t planned = 0, refused = 0;
    for (const auto& c : references()["plans"]) {
        Request r = request_of(c);
        std::string what = c.dump().substr(0, 300);
        if (c.contains("error")) {
            try {
                plan_of(r);
                ADD_FAILURE() << "planned what Python refuses: " << what;
            } catch (const creps::Error& exc) {
                EXPECT_EQ(std::string(exc.what()), c["error"].get<std::string>()) << what;
            }
            ++refused;
            continue;
        }
        Plan plan = plan_of(r);
        std::vector<std::vector<std::int64_t>> chunks, bands, columns;
        for (const LineChunk& k : plan.line_chunks)
            chunks.push_back({k.ys.start, k.ys.stop, k.xs.start, k.xs.stop, k.pad_ys, k.pad_xs});
        for (const Slice& s : plan.bands) bands.push_back({s.start, s.stop});
        for (const Slice& s : plan.columns) columns.push_back({s.start, s.stop});
        std::vector<std::vector<std::int64_t>> want_chunks;
        for (const auto& k : c["chunks"])
            want_chunks.push_back({k[0], k[1], k[2], k[3], k[4].get<bool>(), k[5].get<bool>()});
        EXPECT_EQ(chunks, want_chunks) << what;
        EXPECT_EQ(bands, (c["bands"].get<std::vector<std::vector<std::int64_t>>>())) << what;
        EXPECT_EQ(columns, (c["columns"].get<std::vector<std::vector<std::int64_t>>>())) << what;
        EXPECT_EQ(plan.estimated_bytes, c["estimated"].get<std::int64_t>()) << what;
        ++planned;
    }
    EXPECT_GT(planned, 100u);
    EXPECT_GT(refused, 20u);
}

TEST(Tiling, EveryPlanCoversTheImageOnceWithinItsLimits) {
    for (const auto& c : references()["plans"]) {
        if (c.contains("error")) continue;
        Request r = request_of(c);
        Plan plan = plan_of(r);
        expect_cover(plan.bands, r.height);
        expect_cover(plan.columns, r.width);
        std::vector<Slice> ys, xs;
        for (const LineChunk& k : plan.line_chunks) {
            if (!k.pad_ys) ys.push_back(k.ys);
            if (!k.pad_xs) xs.push_back(k.xs);
            EXPECT_GE(k.ys.size(), r.limits.line_height.first);
            EXPECT_LE(k.ys.size(), r.limits.line_height.second);
            EXPECT_GE(k.xs.size(), r.limits.line_width.first);
            EXPECT_LE(k.xs.size(), r.limits.line_width.second);
        }
        expect_cover(ys, r.height);
        expect_cover(xs, r.width);
        for (const Slice& s : plan.bands) EXPECT_LE(s.size(), r.limits.tile_height.second);
        for (const Slice& s : plan.columns) EXPECT_LE(s.size(), r.limits.tile_width.second);
        if (r.memory) EXPECT_LE(plan.estimated_bytes, *r.memory) << c.dump().substr(0, 300);
        // near-equal parts: a backend sees few shapes
        auto spread = [](const std::vector<Slice>& parts) {
            std::int64_t lo = parts[0].size(), hi = lo;
            for (const Slice& s : parts) lo = std::min(lo, s.size()), hi = std::max(hi, s.size());
            return hi - lo;
        };
        EXPECT_LE(spread(plan.bands), 1);
        EXPECT_LE(spread(plan.columns), 1);
    }
}

TEST(Tiling, ShrinkKeepsTheTilesShape) {
    EXPECT_EQ(shrink({128, 64}, 8192).width, 128);
    creps::TileSize t = shrink({128, 64}, 2048);
    EXPECT_EQ(t.width, 64);
    EXPECT_EQ(t.height, 32);
    t = shrink({128, 64}, 1);
    EXPECT_EQ(t.width, 1);
    EXPECT_EQ(t.height, 1);
}
