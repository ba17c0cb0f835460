#include "seeds.hpp"

#include <cmath>

namespace creps::detail {
namespace {
constexpr int N = 624, M = 397;
constexpr std::uint32_t MATRIX_A = 0x9908b0dfU, UPPER = 0x80000000U, LOWER = 0x7fffffffU;
}  // namespace

LegacyRandom::LegacyRandom(std::uint32_t seed) {
    for (int i = 0; i < N; ++i) {
        key_[i] = seed;
        seed = 1812433253U * (seed ^ (seed >> 30)) + static_cast<std::uint32_t>(i) + 1;
    }
    pos_ = N;
}

std::uint32_t LegacyRandom::next32() {
    if (pos_ == N) {  // regenerate the whole state, as mt19937_gen does
        int i = 0;
        for (; i < N - M; ++i) {
            std::uint32_t y = (key_[i] & UPPER) | (key_[i + 1] & LOWER);
            key_[i] = key_[i + M] ^ (y >> 1) ^ (-(y & 1U) & MATRIX_A);
        }
        for (; i < N - 1; ++i) {
            std::uint32_t y = (key_[i] & UPPER) | (key_[i + 1] & LOWER);
            key_[i] = key_[i + (M - N)] ^ (y >> 1) ^ (-(y & 1U) & MATRIX_A);
        }
        std::uint32_t y = (key_[N - 1] & UPPER) | (key_[0] & LOWER);
        key_[N - 1] = key_[M - 1] ^ (y >> 1) ^ (-(y & 1U) & MATRIX_A);
        pos_ = 0;
    }
    std::uint32_t y = key_[pos_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= y >> 18;
    return y;
}

double LegacyRandom::next_double() {
    std::uint32_t a = next32() >> 5, b = next32() >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
}

double LegacyRandom::gauss() {
    if (has_gauss_) {
        has_gauss_ = false;
        return gauss_;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * next_double() - 1.0;
        x2 = 2.0 * next_double() - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = std::sqrt(-2.0 * std::log(r2) / r2);
    gauss_ = f * x1;
    has_gauss_ = true;
    return f * x2;
}

void seed_to_z(std::uint32_t seed, int z_dim, float* out) {
    LegacyRandom random(seed);
    for (int i = 0; i < z_dim; ++i) out[i] = static_cast<float>(random.gauss());  // float64 -> float32, nearest
}

}  // namespace creps::detail
