// Seeds against numpy: RandomState(seed).randn(1, z_dim) as float32, bit for bit.
#include "references.hpp"
#include "seeds.hpp"

using creps::detail::seed_to_z;
using namespace creps::test;

TEST(Seeds, EqualNumpysRandnBitForBit) {
    const auto& cases = references()["seeds"];
    ASSERT_GT(cases.size(), 50u);
    for (const auto& c : cases) {
        int z_dim = c["z_dim"];
        std::vector<float> z(static_cast<size_t>(z_dim));
        seed_to_z(c["seed"].get<std::uint32_t>(), z_dim, z.data());
        EXPECT_EQ(bits_of(z), c["z"].get<std::vector<std::uint32_t>>()) << "seed " << c["seed"] << " z_dim " << z_dim;
    }
}

TEST(Seeds, SecondGaussianIsTheCachedOne) {
    // the polar method makes two values per accepted pair: the second call returns the first's partner
    creps::detail::LegacyRandom a(5), b(5);
    double first = a.gauss(), second = a.gauss();
    EXPECT_EQ(first, b.gauss());
    EXPECT_EQ(second, b.gauss());
    EXPECT_NE(first, second);
}
