// The stage contract as format version 1 implies it. The exporter records this same table in every
// format-2 manifest ("stages"); test_contract checks it against creps.runtime.stages.to_manifest().
#include "bundle.hpp"

namespace creps::detail {

const ojson& builtin_stages() {
    static const ojson contract = ojson::parse(R"({
  "mapping": {"inputs": [{"name": "z", "dtype": "float32", "axes": ["batch", "z_dim"]},
                         {"name": "psi", "dtype": "float32", "axes": [1]}],
              "outputs": [{"name": "ws", "dtype": "float32", "axes": ["batch", "num_ws", "w_dim"]}]},
  "lines": {"inputs": [{"name": "ws", "dtype": "float32", "axes": ["batch", "num_ws", "w_dim"]},
                       {"name": "ys", "dtype": "float32", "axes": ["height"]},
                       {"name": "xs", "dtype": "float32", "axes": ["width"]}],
            "outputs": [{"name": "cols", "dtype": "float32",
                         "axes": ["batch", "num_blocks", "biline_channels", "height", "rank"]},
                        {"name": "rows", "dtype": "float32",
                         "axes": ["batch", "num_blocks", "biline_channels", "width", "rank"]}]},
  "pixels": {"inputs": [{"name": "ws", "dtype": "float32", "axes": ["batch", "num_ws", "w_dim"]},
                        {"name": "cols", "dtype": "float32",
                         "axes": ["batch", "num_blocks", "biline_channels", "height", "rank"]},
                        {"name": "rows", "dtype": "float32",
                         "axes": ["batch", "num_blocks", "biline_channels", "width", "rank"]}],
             "outputs": [{"name": "img", "dtype": "float32", "axes": ["batch", "img_channels", "height", "width"]}]},
  "generator": {"inputs": [{"name": "z", "dtype": "float32", "axes": ["batch", "z_dim"]},
                           {"name": "psi", "dtype": "float32", "axes": [1]},
                           {"name": "ys", "dtype": "float32", "axes": ["height"]},
                           {"name": "xs", "dtype": "float32", "axes": ["width"]}],
                "outputs": [{"name": "img", "dtype": "float32",
                             "axes": ["batch", "img_channels", "height", "width"]}]}
})");
    return contract;
}

}  // namespace creps::detail
