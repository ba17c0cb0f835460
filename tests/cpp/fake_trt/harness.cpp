// Drives the TensorRT backend (runtime/cpp/src/trt_backend.cpp) on the simulator, for test_trt_backend.py:
//   harness BUNDLE ALLOW_HOST_CODE open
//   harness BUNDLE ALLOW_HOST_CODE stream STAGE CALLS   (CALLS: "n,h,w;..." the batch and line counts per call)
//   harness BUNDLE ALLOW_HOST_CODE range STAGE INPUT AXIS
// Prints JSON lines (each consumed call's inputs and outputs, or the axis range), "error: KIND: text" for
// what the backend threw, then the simulator's report once the backend is gone.
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "backend.hpp"
#include "bundle.hpp"
#include "fake_control.h"

using namespace creps::detail;

namespace {

struct Owned {  // one call's buffers, kept until the call is consumed
    std::vector<std::vector<float>> data;
    Call call;
};

std::vector<Owned> make_calls(const Bundle& bundle, const std::string& stage, const std::string& spec) {
    std::vector<Owned> calls;
    std::stringstream in(spec);
    for (std::string item; std::getline(in, item, ';');) {
        int64_t n, h, w;
        char comma;
        std::stringstream(item) >> n >> comma >> h >> comma >> w;
        const std::map<std::string, int64_t> dynamic = {{"batch", n}, {"height", h}, {"width", w}};
        Owned owned;
        owned.data.reserve(8);
        float value = float(calls.size()) * 100.0f;
        for (const auto& tensor : bundle.stages.at(stage).inputs) {
            std::vector<int64_t> shape;
            for (const auto& axis : tensor.axes)
                shape.push_back(axis.is_number() ? axis.get<int64_t>()
                                : is_dynamic(axis) ? dynamic.at(axis.get<std::string>())
                                                   : bundle.model(axis.get<std::string>()));
            size_t size = 1;
            for (auto d : shape) size *= size_t(d);
            owned.data.emplace_back(size);
            for (auto& v : owned.data.back()) v = (value += 0.25f);
            owned.call.inputs.push_back({tensor.name, shape, owned.data.back().data()});
        }
        auto shapes = bundle.output_shapes(stage, owned.call.inputs);
        for (size_t o = 0; o < shapes.size(); ++o) {
            size_t size = 1;
            for (auto d : shapes[o]) size *= size_t(d);
            owned.data.emplace_back(size, -7.0f);
            const std::string& name = bundle.stages.at(stage).outputs[o].name;
            owned.call.outputs.push_back({name, shapes[o], owned.data.back().data()});
        }
        calls.push_back(std::move(owned));
    }
    return calls;
}

nlohmann::json views(const std::vector<TensorView>& list) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& v : list) {
        size_t size = 1;
        for (auto d : v.shape) size *= size_t(d);
        out[v.name] = {{"shape", v.shape}, {"values", std::vector<float>(v.data, v.data + size)}};
    }
    return out;
}

void run(const std::vector<std::string>& args) {
    const Bundle bundle = read_bundle(args[0], false);
    auto backend = make_tensorrt_backend(bundle.ref(), args[1] == "1");
    std::printf("opened %s\n", backend->name().c_str());
    if (args[2] == "stream") {
        auto calls = make_calls(bundle, args[3], args[4]);
        size_t next = 0;
        backend->run_stream(
            args[3],
            [&]() -> std::optional<Call> {
                if (next == calls.size()) return std::nullopt;
                return calls[next++].call;
            },
            [&](const Call& call) {
                const nlohmann::json done{{"inputs", views(call.inputs)}, {"outputs", views(call.outputs)}};
                std::printf("%s\n", done.dump().c_str());
            });
    } else if (args[2] == "range") {
        auto range = backend->axis_range(args[3], args[4], std::stoi(args[5]));
        std::printf("%s\n", range ? nlohmann::json{range->min, range->max}.dump().c_str() : "null");
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    try {
        run(args);
    } catch (const creps::BundleError& e) {
        std::printf("error: BundleError: %s\n", e.what());
    } catch (const creps::BackendUnavailable& e) {
        std::printf("error: BackendUnavailable: %s\n", e.what());
    } catch (const creps::Error& e) {
        std::printf("error: Error: %s\n", e.what());
    }
    std::printf("%s", fake_report().c_str());
    return 0;
}
