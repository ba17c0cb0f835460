// Embedding creps in a C++ app: open a bundle, render two seeds as a panorama, keep the pixels, save PNGs.
//   creps_example_cpp BUNDLE OUT_FOLDER
#include <creps/runtime.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s BUNDLE OUT_FOLDER\n", argv[0]);
        return 2;
    }
    try {
        creps::Runtime rt{argv[1], {.backend = "auto", .max_memory = 512 << 20}};
        creps::GenerateOptions options;
        options.psi = 0.7f;
        auto images = rt.generate({0, 1}, {256, 64}, options);  // uint8 RGB, height*width*3 each
        std::printf("%s: %zu images of %dx%d, first pixel %d %d %d\n", rt.backend_name().c_str(), images.size(),
                    images[0].width, images[0].height, images[0].rgb[0], images[0].rgb[1], images[0].rgb[2]);
        const std::string out = argv[2];
        rt.save({out + "/seed0000.png", out + "/seed0001.png"}, {0, 1}, {256, 64}, options);  // streamed
    } catch (const creps::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
