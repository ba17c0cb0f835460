#include "grid.hpp"

namespace creps::detail {

void check_size(std::int64_t width, std::int64_t height) {
    std::string size = std::to_string(width) + "x" + std::to_string(height);
    if (width < 1 || height < 1) throw Error("size " + size + ": both sides must be at least 1 pixel");
    if (width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS)
        throw Error("size " + size + " is past the limit (" + std::to_string(MAX_SIDE) + " per side, " +
                    std::to_string(MAX_PIXELS) + " pixels)");
}

Window default_window(std::int64_t width, std::int64_t height, const std::string& fit) {
    std::int64_t short_side = std::min(width, height);
    if (fit == "stretch" || short_side < 2) return {0.0, 0.0, 1.0, 1.0};
    double step = 1.0 / static_cast<double>(short_side - 1);
    double half_w = static_cast<double>(width - 1) * step / 2;
    double half_h = static_cast<double>(height - 1) * step / 2;
    return {0.5 - half_w, 0.5 - half_h, 0.5 + half_w, 0.5 + half_h};
}

std::vector<double> linspace(double start, double stop, std::int64_t num) {
    // numpy's steps: y = arange(num) * (delta / div) + start (y / div * delta if the step underflows to 0),
    // the last point set to stop.
    std::vector<double> y(static_cast<size_t>(num));
    double delta = stop - start;
    std::int64_t div = num - 1;
    double step = div > 0 ? delta / static_cast<double>(div) : 0.0;
    for (std::int64_t i = 0; i < num; ++i) {
        double v = static_cast<double>(i);
        if (div > 0 && step == 0) {
            v = v / static_cast<double>(div);
            v = v * delta;
        } else {
            v = v * (div > 0 ? step : delta);
        }
        y[static_cast<size_t>(i)] = v + start;
    }
    if (num > 1) y.back() = stop;
    return y;
}

void coords(std::int64_t width, std::int64_t height, const Window* window, const std::string& fit,
            std::vector<float>& ys, std::vector<float>& xs) {
    check_size(width, height);
    Window win = window ? *window : default_window(width, height, fit);
    auto to_float = [](const std::vector<double>& v, std::vector<float>& out) {
        out.assign(v.begin(), v.end());  // float64 -> float32, round to nearest, as astype
    };
    to_float(linspace(win.y0, win.y1, height), ys);
    to_float(linspace(win.x0, win.x1, width), xs);
}

}  // namespace creps::detail
