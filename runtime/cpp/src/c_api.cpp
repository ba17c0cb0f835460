// The C API (creps/creps.h) over the C++ API: every entry point catches everything, stores the text in a
// thread-local string and returns a status, so no exception crosses into C or an FFI.
#include "creps/creps.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "creps/runtime.hpp"

struct creps_runtime {
    creps::Runtime runtime;
    std::string backend;
};

namespace {

thread_local std::string last_error;

creps_status fail(creps_status status, const std::string& text) {
    last_error = text;
    return status;
}

// Runs `body`, mapping what it throws to a status (most derived kinds first).
template <class F> creps_status guarded(F&& body) noexcept {
    try {
        body();
        return CREPS_OK;
    } catch (const creps::BundleError& e) {
        return fail(CREPS_BUNDLE_ERROR, e.what());
    } catch (const creps::BackendUnavailable& e) {
        return fail(CREPS_BACKEND_UNAVAILABLE, e.what());
    } catch (const creps::NonFiniteError& e) {
        return fail(CREPS_NON_FINITE, e.what());
    } catch (const creps::Error& e) {
        return fail(CREPS_ERROR, e.what());
    } catch (const std::bad_alloc&) {
        return fail(CREPS_OUT_OF_MEMORY, "out of memory: use a smaller size, tile or max_memory");
    } catch (const std::exception& e) {
        return fail(CREPS_INTERNAL_ERROR, std::string("internal error: ") + e.what());
    } catch (...) {
        return fail(CREPS_INTERNAL_ERROR, "internal error: unknown exception");
    }
}

creps_status invalid(const char* text) { return fail(CREPS_INVALID_ARGUMENT, text); }

creps::GenerateOptions generate_options(const creps_generate_options* c) {
    creps_generate_options defaults;
    creps_generate_options_init(&defaults);
    if (!c) c = &defaults;
    creps::GenerateOptions o;
    o.psi = c->psi;
    if (c->has_window) o.window = creps::Window{c->window[0], c->window[1], c->window[2], c->window[3]};
    if (c->fit) o.fit = c->fit;
    o.batch = c->batch;
    if (c->progress) {
        auto fn = c->progress;
        void* user = c->progress_user;
        o.progress = [fn, user](std::int64_t done, std::int64_t total) { fn(done, total, user); };
    }
    return o;
}

// The images as one malloc'd buffer, image after image.
void hand_out(const std::vector<creps::Image>& images, uint8_t** out_rgb, int* out_width, int* out_height) {
    size_t bytes = 0;
    for (const auto& image : images) bytes += image.rgb.size();
    auto* buffer = static_cast<uint8_t*>(std::malloc(bytes ? bytes : 1));
    if (!buffer) throw std::bad_alloc();
    size_t at = 0;
    for (const auto& image : images) {
        std::memcpy(buffer + at, image.rgb.data(), image.rgb.size());
        at += image.rgb.size();
    }
    *out_rgb = buffer;
    if (out_width) *out_width = images.empty() ? 0 : images[0].width;
    if (out_height) *out_height = images.empty() ? 0 : images[0].height;
}

// generate / generate_z / generate_ws: per_image(model) inputs per image, read from `data`.
template <class T, class PerImage, class Generate>
creps_status generate_any(creps_runtime* rt, const T* data, size_t n, PerImage&& per_image, uint8_t** out_rgb,
                          int* out_width, int* out_height, Generate&& generate) {
    if (!rt || !out_rgb || (!data && n)) return invalid("creps_generate: a NULL runtime, input or output");
    *out_rgb = nullptr;
    return guarded([&] {
        std::vector<T> input(data, data + n * per_image(rt->runtime.model()));
        hand_out(generate(input), out_rgb, out_width, out_height);
    });
}

}  // namespace

extern "C" {

const char* creps_last_error(void) { return last_error.c_str(); }

void creps_options_init(creps_options* options) {
    if (!options) return;
    *options = creps_options{};
    options->backend = "auto";
}

void creps_generate_options_init(creps_generate_options* options) {
    if (!options) return;
    *options = creps_generate_options{};
    options->psi = 1.0f;
    options->fit = "extend";
    options->batch = 1;
}

creps_status creps_open(const char* bundle_dir, const creps_options* options, creps_runtime** out) {
    if (!bundle_dir || !out) return invalid("creps_open: a NULL bundle folder or output");
    *out = nullptr;
    return guarded([&] {
        creps::Options o;
        if (options) {
            if (options->backend) o.backend = options->backend;
            o.threads = options->threads;
            if (options->tile_width || options->tile_height)
                o.tile = creps::TileSize{options->tile_width, options->tile_height};
            o.max_memory = options->max_memory;
            o.allow_engine_host_code = options->allow_engine_host_code != 0;
        }
        creps::Runtime runtime(bundle_dir, o);
        std::string backend = runtime.backend_name();
        *out = new creps_runtime{std::move(runtime), std::move(backend)};
    });
}

void creps_close(creps_runtime* runtime) {
    try {
        delete runtime;
    } catch (...) {  // a destructor that throws ends nothing in C
    }
}

const char* creps_backend_name(const creps_runtime* runtime) { return runtime ? runtime->backend.c_str() : nullptr; }

creps_status creps_model(const creps_runtime* runtime, creps_model_info* out) {
    if (!runtime || !out) return invalid("creps_model: a NULL runtime or output");
    return guarded([&] {
        const creps::ModelInfo m = runtime->runtime.model();
        *out = creps_model_info{m.z_dim, m.w_dim, m.num_ws, m.img_resolution, m.img_channels};
    });
}

creps_status creps_z(const creps_runtime* runtime, const int64_t* seeds, size_t n, float* out) {
    if (!runtime || ((!seeds || !out) && n)) return invalid("creps_z: a NULL runtime, seeds or output");
    return guarded([&] {
        const auto z = runtime->runtime.z(std::vector<std::int64_t>(seeds, seeds + n));
        std::memcpy(out, z.data(), z.size() * sizeof(float));
    });
}

creps_status creps_mapping(creps_runtime* runtime, const float* z, size_t n, float psi, float* out) {
    if (!runtime || ((!z || !out) && n)) return invalid("creps_mapping: a NULL runtime, z or output");
    return guarded([&] {
        const size_t z_dim = size_t(runtime->runtime.model().z_dim);
        const auto ws = runtime->runtime.mapping(std::vector<float>(z, z + n * z_dim), psi);
        std::memcpy(out, ws.data(), ws.size() * sizeof(float));
    });
}

creps_status creps_generate(creps_runtime* runtime, const int64_t* seeds, size_t n, int width, int height,
                            const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                            int* out_height) {
    auto per_image = [](const creps::ModelInfo&) { return size_t(1); };
    return generate_any(runtime, seeds, n, per_image, out_rgb, out_width, out_height, [&](const auto& input) {
        return runtime->runtime.generate(input, {width, height}, generate_options(options));
    });
}

creps_status creps_generate_z(creps_runtime* runtime, const float* z, size_t n, int width, int height,
                              const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                              int* out_height) {
    auto per_image = [](const creps::ModelInfo& m) { return size_t(m.z_dim); };
    return generate_any(runtime, z, n, per_image, out_rgb, out_width, out_height, [&](const auto& input) {
        return runtime->runtime.generate_z(input, {width, height}, generate_options(options));
    });
}

creps_status creps_generate_ws(creps_runtime* runtime, const float* ws, size_t n, int width, int height,
                               const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                               int* out_height) {
    auto per_image = [](const creps::ModelInfo& m) { return size_t(m.num_ws) * size_t(m.w_dim); };
    return generate_any(runtime, ws, n, per_image, out_rgb, out_width, out_height, [&](const auto& input) {
        return runtime->runtime.generate_ws(input, {width, height}, generate_options(options));
    });
}

void creps_free(void* buffer) { std::free(buffer); }

creps_status creps_save(creps_runtime* runtime, const char* const* paths, const int64_t* seeds, size_t n,
                        int width, int height, const creps_generate_options* options) {
    if (!runtime || ((!paths || !seeds) && n)) return invalid("creps_save: a NULL runtime, paths or seeds");
    for (size_t i = 0; i < n; ++i)
        if (!paths[i]) return invalid("creps_save: a NULL path");
    return guarded([&] {
        runtime->runtime.save(std::vector<std::string>(paths, paths + n), std::vector<std::int64_t>(seeds, seeds + n),
                              {width, height}, generate_options(options));
    });
}

}  // extern "C"
