// Coordinates, windows and fits against creps.grid.coords, bit for bit; size refusals word for word.
#include "grid.hpp"
#include "references.hpp"

using namespace creps::test;

TEST(Grid, CoordinatesEqualPythonsBitForBit) {
    const auto& cases = references()["coords"];
    size_t compared = 0;
    for (const auto& c : cases) {
        if (c.contains("error")) continue;
        std::vector<float> ys, xs;
        std::optional<creps::Window> window;
        if (!c["window"].is_null()) {
            auto w = c["window"].get<std::vector<double>>();
            window = creps::Window{w[0], w[1], w[2], w[3]};
        }
        creps::detail::coords(c["width"], c["height"], window ? &*window : nullptr, c["fit"], ys, xs);
        std::string what = c["width"].dump() + "x" + c["height"].dump() + " " + c["window"].dump() + " " +
                           c["fit"].get<std::string>();
        EXPECT_EQ(bits_of(ys), c["ys"].get<std::vector<std::uint32_t>>()) << what;
        EXPECT_EQ(bits_of(xs), c["xs"].get<std::vector<std::uint32_t>>()) << what;
        ++compared;
    }
    EXPECT_GT(compared, 200u);
}

TEST(Grid, BadSizesAreRefusedAsPythonWordsIt) {
    size_t refused = 0;
    for (const auto& c : references()["coords"]) {
        if (!c.contains("error")) continue;
        std::vector<float> ys, xs;
        try {
            creps::detail::coords(c["width"], c["height"], nullptr, "extend", ys, xs);
            ADD_FAILURE() << "size " << c["width"] << "x" << c["height"] << " was accepted";
        } catch (const creps::Error& exc) {
            EXPECT_EQ(std::string(exc.what()), c["error"].get<std::string>());
        }
        ++refused;
    }
    EXPECT_EQ(refused, 5u);
}

TEST(Grid, Uint8IsTheOriginalsTruncatedClamp) {
    using creps::detail::to_uint8;
    EXPECT_EQ(to_uint8(-1.0f), 0);       // -127.5 + 128 = 0.5 -> 0
    EXPECT_EQ(to_uint8(1.0f), 255);      // 255.5 clamped
    EXPECT_EQ(to_uint8(0.0f), 128);
    EXPECT_EQ(to_uint8(-0.9999f), 0);
    EXPECT_EQ(to_uint8(0.99f), 254);     // 254.2 truncated
    EXPECT_EQ(to_uint8(-5.0f), 0);
    EXPECT_EQ(to_uint8(7.0f), 255);
    EXPECT_EQ(to_uint8(-0.0039f), 127);  // 127.50275 truncated, not rounded
}
