// The Python runtime's answers (tests/reference.py wrote them into $CREPS_TEST_SCRATCH before these tests).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace creps::test {

inline std::string scratch() {
    const char* dir = std::getenv("CREPS_TEST_SCRATCH");
    return dir ? dir : "tests/scratch";
}

inline const nlohmann::json& references() {
    static const nlohmann::json loaded = [] {
        std::ifstream in(scratch() + "/references.json");
        if (!in) throw std::runtime_error("no references.json in " + scratch() + ": run tests/reference.py first");
        std::stringstream text;
        text << in.rdbuf();
        return nlohmann::json::parse(text.str());
    }();
    return loaded;
}

inline float from_bits(std::uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline std::uint32_t to_bits(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline std::vector<float> floats(const nlohmann::json& bits) {
    std::vector<float> out;
    for (const auto& b : bits) out.push_back(from_bits(b.get<std::uint32_t>()));
    return out;
}

inline std::vector<std::uint32_t> bits_of(const std::vector<float>& values) {
    std::vector<std::uint32_t> out;
    for (float v : values) out.push_back(to_bits(v));
    return out;
}

inline std::vector<std::uint8_t> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace creps::test
