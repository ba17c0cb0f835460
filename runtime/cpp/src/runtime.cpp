// creps::Runtime: the request checks, the schedule (mapping once per batch, lines in chunks, pixels in
// tiles, each tile written straight into the output) and the PNG streaming of creps.runtime.generate.
#include "creps/runtime.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "backend.hpp"
#include "bundle.hpp"
#include "grid.hpp"
#include "png_stream.hpp"
#include "precision.hpp"
#include "seeds.hpp"
#include "tiling.hpp"

namespace creps {
namespace detail {
namespace {

const char* const BACKENDS = "auto, ort-cpu, ort-cuda, tensorrt";

std::string float_text(float value) {  // repr() of the float a Python caller would have passed
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char buffer[32];
    std::string text(buffer, std::to_chars(buffer, buffer + sizeof buffer, value).ptr);
    return text.find_first_of(".e") == std::string::npos ? text + ".0" : text;
}

struct Opened {
    std::unique_ptr<Backend> backend;
    std::string precision;
};

Opened open_named(const Bundle& bundle, const std::string& name, const Options& o) {
    if (name == "ort-cpu" || name == "ort-cuda") {
        auto backend = make_ort_backend(bundle.ref(), name.substr(4), o.threads,
                                        o.precision.empty() ? "fp32" : o.precision);
        std::string precision = backend->precision();
        return {std::move(backend), precision};
    }
    if (name == "tensorrt") {
#ifdef CREPS_WITH_TENSORRT
        // TensorRT runs what its engines were built in: a precision selects nothing, it must match
        if (auto mismatch = engine_mismatch(bundle, o.precision.empty() ? "auto" : o.precision)) throw BackendUnavailable("tensorrt: " + *mismatch);
        return {make_tensorrt_backend(bundle.ref(), o.allow_engine_host_code), engines_precision(bundle)};
#else
        throw BackendUnavailable("tensorrt: the TensorRT backend cannot be loaded (this creps_runtime was built "
                                 "without it: configure with -DCREPS_WITH_TENSORRT=ON)");
#endif
    }
    throw Error("unknown backend " + py_str_repr(name) + " (choose from " + BACKENDS + ")");
}

// As open_backend: "auto" takes TensorRT if the bundle has engines that run here, else ONNX Runtime CUDA if
// available, else ONNX Runtime on the CPU.
Opened open_backend(const Bundle& bundle, const std::string& name, const Options& o) {
    if (name != "auto") return open_named(bundle, name, o);
    bool engines = bundle.manifest.contains("engines") && !bundle.manifest["engines"].empty();
    for (const char* candidate : {"tensorrt", "ort-cuda"}) {
        if (std::string(candidate) == "tensorrt" && !engines) continue;
        try {
            return open_named(bundle, candidate, o);
        } catch (const BackendUnavailable&) {
            // no faster backend here: the next one
        }
    }
    return open_named(bundle, "ort-cpu", o);
}

Limits limits_of(const Backend& backend) {
    auto both = [&](std::initializer_list<std::tuple<const char*, const char*, int>> carriers) {
        Range range = UNLIMITED;
        bool given = false;
        for (auto [stage, input, axis] : carriers) {
            if (auto r = backend.axis_range(stage, input, axis)) {
                range = given ? Range{std::max(range.first, r->min), std::min(range.second, r->max)}
                              : Range{r->min, r->max};
                given = true;
            }
        }
        return range;
    };
    Limits limits;
    limits.batch = both({{"mapping", "z", 0}, {"lines", "ws", 0}, {"pixels", "ws", 0}, {"pixels", "cols", 0},
                         {"pixels", "rows", 0}});
    limits.line_height = both({{"lines", "ys", 0}});
    limits.line_width = both({{"lines", "xs", 0}});
    limits.tile_height = both({{"pixels", "cols", 3}});
    limits.tile_width = both({{"pixels", "rows", 3}});
    return limits;
}

std::int64_t count_of(const std::vector<std::int64_t>& shape) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
}

// One call's buffers: the inputs it owns (slices copied out of the image's arrays) and its outputs.
struct Slot {
    std::vector<std::vector<float>> owned;
    std::vector<std::vector<float>> outputs;
    Call call;
};

// The folders a save creates for its files (as creps.files.creating_folder): removed again, when still
// empty, unless the save succeeded.
class CreatedFolders {
public:
    void make(const std::filesystem::path& folder) {
        std::vector<std::filesystem::path> missing;
        std::error_code ec;
        for (auto p = folder; !p.empty() && !std::filesystem::exists(p, ec); p = p.parent_path()) {
            missing.push_back(p);
            if (p == p.parent_path()) break;
        }
        std::filesystem::create_directories(folder, ec);  // a failure shows when the PNG is opened there
        created_.insert(created_.end(), missing.begin(), missing.end());  // deepest first
    }
    void keep() { created_.clear(); }
    ~CreatedFolders() {
        for (const auto& p : created_) {
            std::error_code ec;
            std::filesystem::remove(p, ec);  // only if empty: something else was written there otherwise
        }
    }

private:
    std::vector<std::filesystem::path> created_;
};

// The images of one run of the graphs: a label each (for messages) and their z, or ws past the mapping.
struct Batch {
    std::vector<std::string> labels;
    std::vector<float> z, ws;  // n*z_dim, or n*num_ws*w_dim
    size_t size() const { return labels.size(); }
};

}  // namespace
}  // namespace detail

using namespace detail;

struct Runtime::Impl {
    Bundle bundle;
    Options options;
    std::unique_ptr<Backend> backend;
    std::string precision;
    Limits limits;
    ModelSizes sizes{};
    int z_dim = 0, w_dim = 0, num_ws = 0;

    Impl(const std::string& dir, Options opts) : bundle(read_bundle(dir)), options(std::move(opts)) {
        if (options.threads < 0) throw Error("threads " + std::to_string(options.threads) + " must be at least 1");
        Opened opened = open_backend(bundle, options.backend, options);
        backend = std::move(opened.backend);
        precision = opened.precision;
        limits = limits_of(*backend);
        sizes = {bundle.model("num_blocks"), bundle.model("biline_channels"), bundle.model("rank"),
                 bundle.model("img_channels"), bundle.model("channel_base"), bundle.model("channel_max")};
        z_dim = static_cast<int>(bundle.model("z_dim"));
        w_dim = static_cast<int>(bundle.model("w_dim"));
        num_ws = static_cast<int>(bundle.model("num_ws"));
    }

    Plan plan(Size size, std::int64_t batch) const {
        check_size(size.width, size.height);
        std::int64_t workers = std::max(backend->parallel("lines"), backend->parallel("pixels"));
        std::optional<std::int64_t> memory;
        if (options.max_memory != 0) memory = options.max_memory;
        return make_plan(sizes, size.width, size.height, batch, options.tile, memory, std::nullopt, limits, workers);
    }

    // A call of `stage` with these inputs (by contract name), its outputs allocated in the slot.
    void make_call(const std::string& stage, Slot& slot, const std::vector<TensorView>& named) const {
        const StageSpec& spec = bundle.stages.at(stage);
        slot.call.inputs.clear();
        for (const TensorSpec& t : spec.inputs)
            slot.call.inputs.push_back(
                *std::find_if(named.begin(), named.end(), [&](auto& v) { return v.name == t.name; }));
        auto shapes = bundle.output_shapes(stage, slot.call.inputs);
        slot.outputs.resize(shapes.size());
        slot.call.outputs.clear();
        for (size_t i = 0; i < shapes.size(); ++i) {
            slot.outputs[i].resize(static_cast<size_t>(count_of(shapes[i])));
            slot.call.outputs.push_back({spec.outputs[i].name, shapes[i], slot.outputs[i].data()});
        }
    }

    const std::vector<float>& output(const Slot& slot, const std::string& name) const {
        for (size_t i = 0; i < slot.call.outputs.size(); ++i)
            if (slot.call.outputs[i].name == name) return slot.outputs[i];
        throw Error("no output " + name);
    }

    // Calls 0..count-1 of a stage in order: prepare(i, slot) builds call i, the backend runs it, finish(i,
    // slot) takes its results, in order. Up to parallel(stage) calls at once (2x that many prepared), else
    // through the backend's run_stream (which may pipeline them).
    void run_all(const std::string& stage, size_t count, const std::function<void(size_t, Slot&)>& prepare,
                 const std::function<void(size_t, Slot&)>& finish) {
        size_t workers = static_cast<size_t>(std::max(1, backend->parallel(stage)));
        if (workers == 1) {
            std::deque<std::unique_ptr<Slot>> free, busy;
            std::deque<size_t> order;
            size_t next = 0;
            auto produce = [&]() -> std::optional<Call> {
                if (next == count) return std::nullopt;
                std::unique_ptr<Slot> slot;
                if (free.empty()) {
                    slot = std::make_unique<Slot>();
                } else {
                    slot = std::move(free.front());
                    free.pop_front();
                }
                prepare(next, *slot);
                order.push_back(next++);
                busy.push_back(std::move(slot));
                return busy.back()->call;
            };
            auto consume = [&](const Call&) {
                finish(order.front(), *busy.front());
                order.pop_front();
                free.push_back(std::move(busy.front()));
                busy.pop_front();
            };
            backend->run_stream(stage, produce, consume);
            return;
        }
        size_t window = 2 * workers;  // calls prepared ahead of the one being finished: bounds memory
        std::vector<Slot> slots(window);
        std::vector<char> done(window, 0);
        std::vector<std::exception_ptr> errors(window);
        std::mutex mutex;
        std::condition_variable changed;
        size_t next_start = 0, next_finish = 0;
        bool stop = false;
        auto work = [&] {
            for (;;) {
                size_t i;
                {
                    std::unique_lock<std::mutex> lock(mutex);
                    changed.wait(lock, [&] {
                        return stop || next_start == count || next_start < next_finish + window;
                    });
                    if (stop || next_start == count) return;
                    i = next_start++;
                }
                Slot& slot = slots[i % window];
                std::exception_ptr error;
                try {
                    prepare(i, slot);
                    backend->run(stage, slot.call);
                } catch (...) {
                    error = std::current_exception();
                }
                std::lock_guard<std::mutex> lock(mutex);
                errors[i % window] = error;
                done[i % window] = 1;
                changed.notify_all();
            }
        };
        std::vector<std::thread> threads;
        for (size_t t = 0; t < std::min(workers, count); ++t) threads.emplace_back(work);
        auto halt = [&] {
            {
                std::lock_guard<std::mutex> lock(mutex);
                stop = true;
            }
            changed.notify_all();
            for (auto& thread : threads) thread.join();
        };
        try {
            for (size_t i = 0; i < count; ++i) {
                std::exception_ptr error;
                {
                    std::unique_lock<std::mutex> lock(mutex);
                    changed.wait(lock, [&] { return done[i % window] != 0; });
                    error = errors[i % window];
                }
                if (error) std::rethrow_exception(error);
                finish(i, slots[i % window]);
                std::lock_guard<std::mutex> lock(mutex);
                done[i % window] = 0;
                ++next_finish;
                changed.notify_all();
            }
        } catch (...) {
            halt();
            throw;
        }
        halt();
    }

    std::vector<float> run_mapping(const std::vector<float>& z, float psi) {
        Slot slot;
        float psi_value = psi;
        std::int64_t n = static_cast<std::int64_t>(z.size()) / z_dim;
        make_call("mapping", slot, {{"z", {n, z_dim}, const_cast<float*>(z.data())}, {"psi", {1}, &psi_value}});
        backend->run("mapping", slot.call);
        return output(slot, "ws");
    }

    // Every tile of the image of `batch`, band by band, left to right: tile(band, column, img (n, 3, h, w)).
    void tiles(const Batch& batch, Size size, float psi, const GenerateOptions& request, const Plan& plan,
               const std::function<void()>& step,
               const std::function<void(Slice, Slice, const std::vector<float>&)>& tile) {
        std::vector<float> ys, xs;
        coords(size.width, size.height, request.window ? &*request.window : nullptr, request.fit, ys, xs);
        std::vector<float> ws = batch.ws.empty() ? run_mapping(batch.z, psi) : batch.ws;
        const std::int64_t N = static_cast<std::int64_t>(batch.size()), B = sizes.num_blocks,
                           C = sizes.biline_channels, R = sizes.rank, H = size.height, W = size.width;
        TensorView ws_view{"ws", {N, num_ws, w_dim}, ws.data()};
        // the line features of the whole image: cols (N, B, C, H, R), rows (N, B, C, W, R)
        std::vector<float> cols(static_cast<size_t>(N * B * C * H * R)), rows(static_cast<size_t>(N * B * C * W * R));
        // copy between a whole-image array (n, B, C, L, R) and a part (n, B, C, part, R) along L
        auto along = [&](float* whole, std::int64_t length, Slice part, float* piece, bool to_piece) {
            std::int64_t run = part.size() * R;
            for (std::int64_t outer = 0; outer < N * B * C; ++outer) {
                float* w = whole + (outer * length + part.start) * R;
                float* p = piece + outer * run;
                to_piece ? std::copy(w, w + run, p) : std::copy(p, p + run, w);
            }
        };
        run_all("lines", plan.line_chunks.size(),
                [&](size_t i, Slot& slot) {
                    const LineChunk& c = plan.line_chunks[i];
                    make_call("lines", slot, {ws_view, {"ys", {c.ys.size()}, ys.data() + c.ys.start},
                                              {"xs", {c.xs.size()}, xs.data() + c.xs.start}});
                },
                [&](size_t i, Slot& slot) {
                    const LineChunk& c = plan.line_chunks[i];
                    if (!c.pad_ys) along(cols.data(), H, c.ys, const_cast<float*>(output(slot, "cols").data()), false);
                    if (!c.pad_xs) along(rows.data(), W, c.xs, const_cast<float*>(output(slot, "rows").data()), false);
                    step();
                });
        std::vector<std::pair<Slice, Slice>> all;
        for (const Slice& band : plan.bands)
            for (const Slice& column : plan.columns) all.emplace_back(band, column);
        run_all("pixels", all.size(),
                [&](size_t i, Slot& slot) {
                    auto [band, column] = all[i];
                    slot.owned.resize(2);
                    slot.owned[0].resize(static_cast<size_t>(N * B * C * band.size() * R));
                    slot.owned[1].resize(static_cast<size_t>(N * B * C * column.size() * R));
                    along(cols.data(), H, band, slot.owned[0].data(), true);
                    along(rows.data(), W, column, slot.owned[1].data(), true);
                    make_call("pixels", slot, {ws_view, {"cols", {N, B, C, band.size(), R}, slot.owned[0].data()},
                                               {"rows", {N, B, C, column.size(), R}, slot.owned[1].data()}});
                },
                [&](size_t i, Slot& slot) {
                    auto [band, column] = all[i];
                    const std::vector<float>& img = output(slot, "img");
                    check_finite(img, batch, band, column);
                    step();
                    tile(band, column, img);
                });
    }

    static void check_finite(const std::vector<float>& img, const Batch& batch, Slice band, Slice column) {
        size_t per_image = img.size() / batch.size();
        for (size_t n = 0; n < batch.size(); ++n) {
            const float* p = img.data() + n * per_image;
            if (!std::all_of(p, p + per_image, [](float v) { return std::isfinite(v); }))
                throw NonFiniteError(batch.labels[n] + ": the pixels graph gave NaN or Inf in the tile x " +
                                     std::to_string(column.start) + "-" + std::to_string(column.stop - 1) + ", y " +
                                     std::to_string(band.start) + "-" + std::to_string(band.stop - 1) +
                                     "; the bundle does not compute finite images (weights that are not finite, or "
                                     "an overflow); no image written");
        }
    }

    // img (n, 3, h, w) of the tile -> uint8 pixels at (row0 + y, column.start + x) of each image's target.
    static void write_tile(const std::vector<float>& img, size_t n_images, Slice band, Slice column,
                           const std::function<std::uint8_t*(size_t)>& target, std::int64_t row0, std::int64_t width) {
        std::int64_t h = band.size(), w = column.size();
        for (size_t n = 0; n < n_images; ++n) {
            const float* channels = img.data() + n * 3 * h * w;
            std::uint8_t* out = target(n);
            for (std::int64_t y = 0; y < h; ++y) {
                std::uint8_t* row = out + ((row0 + y) * width + column.start) * 3;
                for (std::int64_t x = 0; x < w; ++x)
                    for (int c = 0; c < 3; ++c) row[x * 3 + c] = to_uint8(channels[(c * h + y) * w + x]);
            }
        }
    }

    // The checks of Runtime.prepare, then the batch's parts and their plans.
    struct Part { Batch batch; Plan plan; };
    std::pair<Size, std::vector<Part>> prepare(Size size, const GenerateOptions& request,
                                               const std::function<Batch()>& images) const {
        if (size.width == 0 && size.height == 0) {
            int res = static_cast<int>(bundle.model("img_resolution"));
            size = {res, res};
        }
        if (request.batch < 1) throw Error("batch " + std::to_string(request.batch) + " must be at least 1");
        if (!std::isfinite(request.psi))
            throw Error("truncation psi " + float_text(request.psi) + " is not a finite number");
        if (request.fit != "extend" && request.fit != "stretch")
            throw Error("fit " + py_str_repr(request.fit) + " is not one of extend, stretch");
        Batch every = images();
        std::vector<Part> parts;
        size_t step = static_cast<size_t>(request.batch);
        for (size_t start = 0; start < every.size(); start += step) {
            size_t stop = std::min(every.size(), start + step);
            Batch part;
            part.labels.assign(every.labels.begin() + start, every.labels.begin() + stop);
            auto cut = [&](const std::vector<float>& all, std::vector<float>& out) {
                if (all.empty()) return;
                size_t per = all.size() / every.size();
                out.assign(all.begin() + start * per, all.begin() + stop * per);
            };
            cut(every.z, part.z);
            cut(every.ws, part.ws);
            Plan plan = this->plan(size, static_cast<std::int64_t>(part.size()));
            parts.push_back({std::move(part), std::move(plan)});
        }
        return {size, std::move(parts)};
    }

    static std::int64_t total_steps(const std::vector<Part>& parts) {
        std::int64_t total = 0;
        for (const Part& p : parts)
            total += static_cast<std::int64_t>(p.plan.line_chunks.size() + p.plan.bands.size() * p.plan.columns.size());
        return total;
    }

    std::vector<Image> generate(Size size, const GenerateOptions& request, const std::function<Batch()>& images) {
        auto [actual, parts] = prepare(size, request, images);
        std::int64_t total = total_steps(parts), done_steps = 0;
        auto step = [&] {
            if (request.progress) request.progress(++done_steps, total);
        };
        std::vector<Image> out;
        for (const Part& part : parts) {
            size_t first = out.size();
            for (size_t n = 0; n < part.batch.size(); ++n)
                out.push_back({actual.width, actual.height,
                               std::vector<std::uint8_t>(static_cast<size_t>(actual.width) * actual.height * 3)});
            tiles(part.batch, actual, request.psi, request, part.plan, step,
                  [&](Slice band, Slice column, const std::vector<float>& img) {
                      write_tile(img, part.batch.size(), band, column,
                                 [&](size_t n) { return out[first + n].rgb.data(); }, band.start, actual.width);
                  });
        }
        return out;
    }

    void save(const std::vector<std::string>& paths, Size size, const GenerateOptions& request,
              const std::function<Batch()>& images) {
        auto [actual, parts] = prepare(size, request, images);
        size_t count = 0;
        for (const Part& p : parts) count += p.batch.size();
        if (paths.size() != count)
            throw Error(std::to_string(paths.size()) + " output paths for " + std::to_string(count) + " images");
        std::int64_t total = total_steps(parts), done_steps = 0;
        auto step = [&] {
            if (request.progress) request.progress(++done_steps, total);
        };
        size_t done = 0;
        CreatedFolders folders;
        for (const Part& part : parts) {
            std::vector<std::unique_ptr<PngStream>> streams;
            for (size_t n = 0; n < part.batch.size(); ++n) {
                folders.make(std::filesystem::path(paths[done + n]).parent_path());
                streams.push_back(std::make_unique<PngStream>(paths[done + n], actual.width, actual.height));
            }
            std::int64_t band_height = part.plan.tile().height;
            size_t band_bytes = static_cast<size_t>(band_height) * actual.width * 3;
            std::vector<std::uint8_t> band_pixels(part.batch.size() * band_bytes);  // (n, h, W, 3)
            tiles(part.batch, actual, request.psi, request, part.plan, step,
                  [&](Slice band, Slice column, const std::vector<float>& img) {
                      write_tile(img, part.batch.size(), band, column,
                                 [&](size_t n) { return band_pixels.data() + n * band_bytes; }, 0, actual.width);
                      if (column.stop == actual.width)
                          for (size_t n = 0; n < streams.size(); ++n)
                              streams[n]->write(band_pixels.data() + n * band_bytes, static_cast<int>(band.size()));
                  });
            for (auto& stream : streams) stream->commit();
            done += part.batch.size();
        }
        folders.keep();
    }

    Batch from_seeds(const std::vector<std::int64_t>& seeds) const {
        check_seeds(seeds);
        Batch batch;
        for (std::int64_t seed : seeds) batch.labels.push_back("seed " + std::to_string(seed));
        batch.z = z_of(seeds);
        return batch;
    }

    static void check_seeds(const std::vector<std::int64_t>& seeds) {
        if (seeds.empty()) throw Error("no seeds given");
        for (std::int64_t seed : seeds)
            if (seed < 0 || seed >= (std::int64_t{1} << 32))
                throw Error("seed " + std::to_string(seed) + " is outside 0..2**32-1");
    }

    std::vector<float> z_of(const std::vector<std::int64_t>& seeds) const {
        std::vector<float> z(seeds.size() * static_cast<size_t>(z_dim));
        for (size_t i = 0; i < seeds.size(); ++i)
            seed_to_z(static_cast<std::uint32_t>(seeds[i]), z_dim, z.data() + i * z_dim);
        return z;
    }

    // As as_latents: n >= 1 rows of `width` finite values.
    static void check_latents(const std::string& name, const std::vector<float>& values, size_t width,
                              const std::string& want) {
        if (values.empty() || values.size() % width != 0)  // a flat vector: its length is what can be wrong
            throw Error(name + " has " + std::to_string(values.size()) + " values; this bundle's model takes [N, " +
                        want + "], N >= 1");
        if (!std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); }))
            throw Error(name + " has NaN or Inf values");
    }

    Batch from_z(const std::vector<float>& z) const {
        check_latents("z", z, static_cast<size_t>(z_dim), std::to_string(z_dim));
        Batch batch;
        for (size_t i = 0; i < z.size() / z_dim; ++i) batch.labels.push_back("image " + std::to_string(i));
        batch.z = z;
        return batch;
    }

    Batch from_ws(const std::vector<float>& ws, float psi) const {
        if (psi != 1.0f)
            throw Error("psi " + float_text(psi) +
                        " with ws: truncation happens in the mapping, before ws (pass z instead)");
        size_t width = static_cast<size_t>(num_ws) * w_dim;
        check_latents("ws", ws, width, std::to_string(num_ws) + ", " + std::to_string(w_dim));
        Batch batch;
        for (size_t i = 0; i < ws.size() / width; ++i) batch.labels.push_back("image " + std::to_string(i));
        batch.ws = ws;
        return batch;
    }
};

Runtime::Runtime(const std::string& bundle_dir, Options options)
    : impl_(std::make_unique<Impl>(bundle_dir, std::move(options))) {}
Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

std::string Runtime::backend_name() const { return impl_->backend->name(); }
std::string Runtime::precision() const { return impl_->precision; }

ModelInfo Runtime::model() const {
    const Bundle& b = impl_->bundle;
    return {impl_->z_dim, impl_->w_dim, impl_->num_ws, static_cast<int>(b.model("img_resolution")),
            static_cast<int>(b.model("img_channels"))};
}

std::vector<float> Runtime::z(const std::vector<std::int64_t>& seeds) const {
    Impl::check_seeds(seeds);
    return impl_->z_of(seeds);
}

std::vector<float> Runtime::mapping(const std::vector<float>& z, float psi) {
    Impl::check_latents("z", z, static_cast<size_t>(impl_->z_dim), std::to_string(impl_->z_dim));
    return impl_->run_mapping(z, psi);
}

std::vector<Image> Runtime::generate(const std::vector<std::int64_t>& seeds, Size size, const GenerateOptions& o) {
    return impl_->generate(size, o, [&] { return impl_->from_seeds(seeds); });
}

std::vector<Image> Runtime::generate_z(const std::vector<float>& z, Size size, const GenerateOptions& o) {
    return impl_->generate(size, o, [&] { return impl_->from_z(z); });
}

std::vector<Image> Runtime::generate_ws(const std::vector<float>& ws, Size size, const GenerateOptions& o) {
    return impl_->generate(size, o, [&] { return impl_->from_ws(ws, o.psi); });
}

void Runtime::save(const std::vector<std::string>& paths, const std::vector<std::int64_t>& seeds, Size size,
                   const GenerateOptions& o) {
    impl_->save(paths, size, o, [&] { return impl_->from_seeds(seeds); });
}

}  // namespace creps
