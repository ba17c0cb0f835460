// Bundles refused as the Python runtime refuses them, word for word; the built-in stage contract equals
// creps.runtime.stages.to_manifest(); format version 1 reads with it.
#include "bundle.hpp"
#include "creps/runtime.hpp"
#include "pyformat.hpp"
#include "references.hpp"

using namespace creps::test;

TEST(Bundle, BuiltInContractIsPythons) {
    // compared as unordered JSON: object keys may come in any order, lists (the call order) may not
    EXPECT_EQ(nlohmann::json::parse(creps::detail::builtin_stages().dump()), references()["stages"]);
}

TEST(Bundle, EachBrokenBundleIsRefusedWithPythonsLine) {
    const auto& cases = references()["refusals"];
    ASSERT_GT(cases.size(), 50u);
    for (const auto& c : cases) {
        std::string want = c["message"], label = c["label"];
        creps::Options options;
        options.backend = c.value("backend", "ort-cpu");
        options.precision = c.value("precision", "fp32");
        options.threads = 1;
        try {
            creps::Runtime runtime(c["dir"].get<std::string>(), options);
            ADD_FAILURE() << label << ": accepted";
        } catch (const creps::Error& exc) {
            std::string got = exc.what();
            EXPECT_EQ(got.find('\n'), std::string::npos) << label;
            if (c["prefix"].get<bool>()) {  // the JSON parser's own words differ; the line up to them does not
                std::string head = want.substr(0, want.find('(') + 1);
                EXPECT_EQ(got.substr(0, head.size()), head) << label << ": " << got;
            } else {
                EXPECT_EQ(got, want) << label;
            }
        }
    }
}

TEST(Bundle, RefusalsAreTyped) {
    std::string dir = references()["refusals"][0]["dir"];  // a future format version
    EXPECT_THROW(creps::detail::read_bundle(dir), creps::BundleError);
}

TEST(Bundle, VersionOneReadsWithTheBuiltInContract) {
    auto bundle = creps::detail::read_bundle(references()["version1"].get<std::string>());
    EXPECT_FALSE(bundle.manifest.contains("stages"));
    ASSERT_EQ(bundle.stages.at("lines").inputs.size(), 3u);
    EXPECT_EQ(bundle.stages.at("lines").inputs[1].name, "ys");
}

TEST(Bundle, Sha256IsOpenSslsOfTheBytes) {
    std::string file = scratch() + "/sha_probe";
    std::ofstream(file, std::ios::binary) << "abc";
    EXPECT_EQ(creps::detail::sha256_file(file), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PyFormat, ReprAndDumpsAsPython) {
    using creps::detail::ojson;
    EXPECT_EQ(creps::detail::py_repr(ojson::parse(R"([1, "a'b", null, true, 1.5, {"k": [2.0]}])")),
              R"([1, "a'b", None, True, 1.5, {'k': [2.0]}])");
    EXPECT_EQ(creps::detail::py_dumps(ojson::parse(R"({"a": [1, 1e16, 0.0001, 1e-05, "\u00e9"]})")),
              R"({"a": [1, 1e+16, 0.0001, 1e-05, "\u00e9"]})");
    EXPECT_EQ(creps::detail::py_path("a//b/./c/"), "a/b/c");
    EXPECT_EQ(creps::detail::py_path("./"), ".");
    EXPECT_EQ(creps::detail::head("ééé", 2), "éé");
}

TEST(Bundle, PrecisionRunsWhatPythonsRuns) {
    const auto& cases = references()["precisions"];
    ASSERT_EQ(cases.size(), 45u);  // 15 bundles (reference.py PRECISION_CASES) x 3 requests
    for (const auto& c : cases) {
        creps::Options options{"ort-cpu", 1};
        options.precision = c["requested"];
        if (c.contains("refused")) {  // 8-bit weights named on a CPU whose kernels saturate them
            try {
                creps::Runtime refused(c["dir"].get<std::string>(), options);
                ADD_FAILURE() << "not refused: " << c.dump();
            } catch (const creps::BundleError& e) {
                EXPECT_EQ(std::string(e.what()), c["refused"].get<std::string>());
            }
            continue;
        }
        creps::Runtime runtime(c["dir"].get<std::string>(), options);
        EXPECT_EQ(runtime.precision(), c["runs"].get<std::string>()) << c.dump();
        // the reduced graphs are the fp32 files under other names: the same image whatever runs
        EXPECT_EQ(runtime.generate({2}, {6, 4})[0].rgb.size(), 6u * 4 * 3);
    }
}
