// Which of a bundle's graphs a backend runs, and what "auto" picks: creps.runtime.precision, read from the
// same manifest fields (the graphs present, their recorded errors, verification.precision.bars).
#pragma once
#include <optional>
#include <string>

#include "bundle.hpp"

namespace creps::detail {

// The precision of `stage`'s graph in a `precision` run: the mapping stays fp32.
std::string stage_precision(const std::string& stage, const std::string& precision);
std::string graph_key(const std::string& stage, const std::string& precision);
// The precision an ONNX Runtime backend ("ort-cpu", "ort-cuda") runs for `requested` (fp32, fp16, int8 or
// auto); BundleError (with the command that makes it) when the bundle lacks it.
std::string choose_precision(const Bundle& bundle, const std::string& backend, const std::string& requested);
// The precision of the bundle's TensorRT engines; BundleError when its lines and pixels engines differ.
std::string engines_precision(const Bundle& bundle);
// Why the engines cannot run `requested` (nullopt: they can, or it is auto).
std::optional<std::string> engine_mismatch(const Bundle& bundle, const std::string& requested);

}  // namespace creps::detail
