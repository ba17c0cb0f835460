// creps::Runtime against creps.runtime.Runtime on the same bundle and backend: the same uint8 images, bit
// for bit (seeds, z, ws, sizes 1xN and Nx1, windows, fits, tiles, budgets, batches, threads), the same
// mapping floats, the same refusals; save() streams the same pixels into a PNG.
#include <filesystem>

#include <png.h>

#include "creps/runtime.hpp"
#include "references.hpp"

using namespace creps::test;

namespace {

creps::Options options_of(const nlohmann::json& c) {
    creps::Options options;
    options.backend = "ort-cpu";
    options.threads = c.value("threads", 0);
    if (c.contains("tile")) options.tile = creps::TileSize{c["tile"][0], c["tile"][1]};
    if (c.contains("max_memory")) options.max_memory = c["max_memory"];
    return options;
}

creps::GenerateOptions request_of(const nlohmann::json& c) {
    creps::GenerateOptions request;
    if (c.contains("psi"))  // a non-finite psi comes as its repr: JSON has no NaN
        request.psi = c["psi"].is_string() ? std::stof(c["psi"].get<std::string>()) : c["psi"].get<float>();
    request.fit = c.value("fit", "extend");
    request.batch = c.value("batch", 1);
    if (c.contains("window")) {
        auto w = c["window"].get<std::vector<double>>();
        request.window = creps::Window{w[0], w[1], w[2], w[3]};
    }
    return request;
}

creps::Size size_of(const nlohmann::json& c) {
    return c.contains("size") ? creps::Size{c["size"][0], c["size"][1]} : creps::Size{};
}

std::vector<std::uint8_t> joined(const std::vector<creps::Image>& images) {
    std::vector<std::uint8_t> all;
    for (const auto& image : images) all.insert(all.end(), image.rgb.begin(), image.rgb.end());
    return all;
}

size_t differing(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
    size_t n = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += a[i] != b[i];
    return n + (a.size() > b.size() ? a.size() - b.size() : b.size() - a.size());
}

std::vector<std::uint8_t> decode_png(const std::string& path, int& width, int& height) {
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path.c_str())) return {};
    image.format = PNG_FORMAT_RGB;
    std::vector<std::uint8_t> pixels(PNG_IMAGE_SIZE(image));
    png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr);
    width = static_cast<int>(image.width);
    height = static_cast<int>(image.height);
    return pixels;
}

}  // namespace

TEST(Runtime, ImagesEqualThePythonRuntimesBitForBit) {
    std::string bundle = references()["bundle"];
    size_t compared = 0;
    for (const auto& c : references()["images"]) {
        if (!c.contains("file")) continue;
        creps::Runtime runtime(bundle, options_of(c));
        EXPECT_EQ(runtime.backend_name(), "ort-cpu");
        std::vector<creps::Image> images;
        if (c.contains("z")) {
            images = runtime.generate_z(floats(c["z"]), size_of(c), request_of(c));
        } else if (c.contains("ws")) {
            images = runtime.generate_ws(floats(c["ws"]), size_of(c), request_of(c));
        } else {
            images = runtime.generate(c["seeds"].get<std::vector<std::int64_t>>(), size_of(c), request_of(c));
        }
        ASSERT_EQ(images.size(), c["count"].get<size_t>());
        auto want = read_file(scratch() + "/" + c["file"].get<std::string>());
        EXPECT_EQ(differing(joined(images), want), 0u) << c["label"];
        ++compared;
    }
    EXPECT_EQ(compared, 8u);
}

TEST(Runtime, MappingEqualsPythonsFloats) {
    for (const auto& c : references()["images"]) {
        if (!c.contains("mapping_z")) continue;
        creps::Runtime runtime(references()["bundle"].get<std::string>(), {"ort-cpu", 1});
        EXPECT_EQ(bits_of(runtime.mapping(floats(c["mapping_z"]), c["psi"])),
                  c["ws"].get<std::vector<std::uint32_t>>());
        creps::ModelInfo model = runtime.model();
        EXPECT_EQ(model.z_dim, 32);
        EXPECT_EQ(model.num_ws * model.w_dim * 2, static_cast<int>(c["ws"].size()));
    }
}

TEST(Runtime, AutoTakesWhatPythonTakes) {
    creps::Runtime runtime(references()["bundle"].get<std::string>());
    EXPECT_EQ(runtime.backend_name(), references()["auto"].get<std::string>());
    EXPECT_EQ(runtime.precision(), "fp32");
}

TEST(Runtime, VersionOneBundleGivesTheSameImage) {
    creps::Runtime v2(references()["bundle"].get<std::string>(), {"ort-cpu", 1});
    creps::Runtime v1(references()["version1"].get<std::string>(), {"ort-cpu", 1});
    EXPECT_EQ(differing(joined(v1.generate({3}, {9, 5})), joined(v2.generate({3}, {9, 5}))), 0u);
}

TEST(Runtime, SaveStreamsTheSamePixelsIntoAPng) {
    const auto& c = references()["images"][0];  // three seeds, batch 2, small tiles
    creps::Runtime runtime(references()["bundle"].get<std::string>(), options_of(c));
    std::vector<std::string> paths;
    for (int i = 0; i < 3; ++i) paths.push_back(scratch() + "/saved" + std::to_string(i) + ".png");
    runtime.save(paths, c["seeds"].get<std::vector<std::int64_t>>(), size_of(c), request_of(c));
    auto want = read_file(scratch() + "/" + c["file"].get<std::string>());
    size_t per_image = want.size() / 3;
    for (int i = 0; i < 3; ++i) {
        int width = 0, height = 0;
        auto pixels = decode_png(paths[i], width, height);
        EXPECT_EQ(width, 37);
        EXPECT_EQ(height, 23);
        std::vector<std::uint8_t> expected(want.begin() + i * per_image, want.begin() + (i + 1) * per_image);
        EXPECT_EQ(differing(pixels, expected), 0u) << paths[i];
    }
}

TEST(Runtime, SaveMakesTheFoldersItWritesInto) {
    creps::Runtime runtime(references()["bundle"].get<std::string>(), {"ort-cpu", 1});
    std::filesystem::remove_all(scratch() + "/made");
    std::string path = scratch() + "/made/deeper/seed0001.png";
    runtime.save({path}, {1}, {5, 3});
    int width = 0, height = 0;
    EXPECT_EQ(decode_png(path, width, height).size(), 5u * 3 * 3);
    // the file and no temporary
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(scratch() + "/made/deeper"), {}), 1);
}

TEST(Runtime, RequestsAreRefusedWithPythonsLine) {
    std::string bundle = references()["bundle"];
    for (const auto& c : references()["requests"]) {
        std::string want = c["message"];
        creps::Options options{"ort-cpu", 1};
        if (c.contains("tile")) options.tile = creps::TileSize{c["tile"][0], c["tile"][1]};
        if (c.contains("max_memory")) options.max_memory = c["max_memory"];
        creps::GenerateOptions request = request_of(c);
        if (c.contains("z_values"))  // a flat vector: C++ names its length where Python names a 2-D shape
            want = "z has " + c["z_values"].dump() + " values; this bundle's model takes [N, 32], N >= 1";
        if (c.contains("ws_values"))
            want = "ws has " + c["ws_values"].dump() + " values; this bundle's model takes [N, 7, 32], N >= 1";
        try {
            creps::Runtime runtime(bundle, options);
            if (c.contains("ws_rows")) {
                runtime.generate_ws(std::vector<float>(7 * 32), size_of(c), request);
            } else if (c.contains("z_values")) {
                runtime.generate_z(std::vector<float>(c["z_values"].get<size_t>()), size_of(c), request);
            } else if (c.contains("ws_values")) {
                runtime.generate_ws(std::vector<float>(c["ws_values"].get<size_t>()), size_of(c), request);
            } else if (c.contains("z_nan")) {
                runtime.generate_z(std::vector<float>(32, std::nanf("")), size_of(c), request);
            } else if (c.contains("paths")) {
                runtime.save(std::vector<std::string>(c["paths"].get<size_t>(), scratch() + "/x.png"),
                             c["seeds"].get<std::vector<std::int64_t>>(), size_of(c), request);
            } else {
                runtime.generate(c["seeds"].get<std::vector<std::int64_t>>(), size_of(c), request);
            }
            ADD_FAILURE() << want << ": accepted";
        } catch (const creps::Error& exc) {
            EXPECT_EQ(std::string(exc.what()), want);
        }
    }
}

TEST(Runtime, NonFiniteTileIsRefusedNamingTheImageAndTile) {
    // ws of 3e38: the graphs overflow to Inf/NaN (Python refuses it so); never written as black pixels
    creps::Runtime runtime(references()["bundle"].get<std::string>(), {"ort-cpu", 1});
    std::vector<float> ws(7 * 32, 3e38f);
    try {
        runtime.generate_ws(ws, {8, 4});
        FAIL() << "an overflowing image was accepted";
    } catch (const creps::NonFiniteError& exc) {
        EXPECT_EQ(std::string(exc.what()), references()["nonfinite"].get<std::string>());
    }
}
