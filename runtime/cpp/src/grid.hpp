// Sizes, coordinates and pixel conversion as creps.grid computes them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "creps/runtime.hpp"

namespace creps::detail {

constexpr std::int64_t MAX_PIXELS = std::int64_t{1} << 32;
constexpr std::int64_t MAX_SIDE = std::int64_t{1} << 20;

void check_size(std::int64_t width, std::int64_t height);  // creps::Error with grid.check_size's text
Window default_window(std::int64_t width, std::int64_t height, const std::string& fit);
std::vector<double> linspace(double start, double stop, std::int64_t num);  // numpy.linspace, float64
// (ys [H], xs [W]) float32, computed in float64; no window: the fit's default window.
void coords(std::int64_t width, std::int64_t height, const Window* window, const std::string& fit,
            std::vector<float>& ys, std::vector<float>& xs);
// clamp(v * 127.5 + 128, 0, 255) in float32, truncated: the original's conversion.
inline std::uint8_t to_uint8(float v) {
    float scaled = v * 127.5f;
    scaled = scaled + 128.0f;
    scaled = scaled < 0.0f ? 0.0f : scaled > 255.0f ? 255.0f : scaled;
    return static_cast<std::uint8_t>(scaled);
}

}  // namespace creps::detail
