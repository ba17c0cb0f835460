// Times creps::Runtime::generate as benchmarks/cpp_runtime.py times the Python runtime's: one warm-up
// image, then the best of REPEATS images of seed 0. Prints {"seconds": ..., "backend": ...}; writes the
// last image's uint8 RGB to RAW when given (for the bit-exactness count).
//   creps-bench-cpp BUNDLE WIDTHxHEIGHT REPEATS THREADS [RAW]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "creps/runtime.hpp"

int main(int argc, char** argv) {
    if (argc < 5) {
        std::cerr << "usage: creps-bench-cpp BUNDLE WIDTHxHEIGHT REPEATS THREADS [RAW]\n";
        return 2;
    }
    try {
        creps::Options options;
        options.backend = "ort-cpu";
        options.threads = std::stoi(argv[4]);
        creps::Runtime runtime(argv[1], options);
        creps::Size size;
        if (std::sscanf(argv[2], "%dx%d", &size.width, &size.height) != 2) throw creps::Error("bad size");
        runtime.generate({0}, {64, 64});
        double best = 1e300;
        std::vector<creps::Image> images;
        for (int i = 0; i < std::stoi(argv[3]); ++i) {
            auto start = std::chrono::steady_clock::now();
            images = runtime.generate({0}, size);
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        if (argc > 5)
            std::ofstream(argv[5], std::ios::binary)
                .write(reinterpret_cast<const char*>(images[0].rgb.data()),
                       static_cast<std::streamsize>(images[0].rgb.size()));
        std::cout << "{\"seconds\": " << best << ", \"backend\": \"" << runtime.backend_name() << "\"}\n";
    } catch (const creps::Error& exc) {
        std::cerr << exc.what() << "\n";
        return 1;
    }
}
