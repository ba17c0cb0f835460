// Seeds as the original draws them: numpy's RandomState(seed).randn(1, z_dim), as float32.
#pragma once
#include <cstdint>
#include <vector>

namespace creps::detail {

// numpy's legacy generator: MT19937 seeded by init_genrand (RandomState(int)), 53-bit doubles, and the
// polar Gaussian that keeps its second value for the next draw.
class LegacyRandom {
public:
    explicit LegacyRandom(std::uint32_t seed);
    std::uint32_t next32();
    double next_double();
    double gauss();

private:
    std::uint32_t key_[624];
    int pos_;
    bool has_gauss_ = false;
    double gauss_ = 0.0;
};

void seed_to_z(std::uint32_t seed, int z_dim, float* out);  // z_dim floats

}  // namespace creps::detail
