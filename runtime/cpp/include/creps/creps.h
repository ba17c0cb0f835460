/* creps C API: generate images from an exported creps bundle, from C or any FFI.
 *
 * A thin layer over the C++ API (creps/runtime.hpp), with the same results bit for bit. Every function
 * returns a creps_status; on failure creps_last_error() gives one line of text (the same text the Python
 * runtime gives). No C++ exception ever crosses this API. A creps_runtime is used by one thread at a time.
 *
 *   creps_runtime* rt;
 *   if (creps_open("bundles/ffhq", NULL, &rt) != CREPS_OK) { fprintf(stderr, "%s\n", creps_last_error()); ... }
 *   int64_t seeds[] = {0, 1};
 *   uint8_t* rgb; int w, h;
 *   creps_generate(rt, seeds, 2, 2048, 512, NULL, &rgb, &w, &h);  // 2 images of h*w*3 bytes, one after another
 *   creps_free(rgb);
 *   creps_close(rt);
 */
#ifndef CREPS_CREPS_H
#define CREPS_CREPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum creps_status {
    CREPS_OK = 0,
    CREPS_ERROR = 1,                 /* a request or a file the runtime refuses (bad size, seeds, output) */
    CREPS_BUNDLE_ERROR = 2,          /* the bundle is missing, corrupt, altered or of another format version */
    CREPS_BACKEND_UNAVAILABLE = 3,   /* the backend cannot run here (library, provider, GPU or engine) */
    CREPS_NON_FINITE = 4,            /* the model gave NaN or Inf: no image was written */
    CREPS_INVALID_ARGUMENT = 5,      /* a NULL pointer or a count this API cannot take */
    CREPS_OUT_OF_MEMORY = 6,
    CREPS_INTERNAL_ERROR = 7         /* anything else (a bug): the text says what */
} creps_status;

/* The text of the last failure on this thread ("" if none yet); valid until the next failing call on it. */
const char* creps_last_error(void);

typedef struct creps_runtime creps_runtime;

typedef struct creps_options {
    const char* backend;             /* "auto" (NULL too) | "ort-cpu" | "ort-cuda" | "tensorrt" */
    int threads;                     /* 0: all cores */
    int tile_width, tile_height;     /* 0, 0: the default tile */
    int64_t max_memory;              /* bytes; 0: the default budget */
    int allow_engine_host_code;      /* nonzero: run TensorRT version-compatible engines (they carry host code) */
} creps_options;

typedef void (*creps_progress_fn)(int64_t done, int64_t total, void* user);

typedef struct creps_generate_options {
    float psi;                       /* truncation, 1: none */
    int has_window;                  /* nonzero: show window[] = x0, y0, x1, y1 of the plane */
    double window[4];
    const char* fit;                 /* "extend" (NULL too) | "stretch" */
    int batch;                       /* images per graph call, >= 1 */
    creps_progress_fn progress;      /* optional */
    void* progress_user;
} creps_generate_options;

typedef struct creps_model_info {
    int z_dim, w_dim, num_ws, img_resolution, img_channels;
} creps_model_info;

/* The defaults (what NULL options mean). */
void creps_options_init(creps_options* options);
void creps_generate_options_init(creps_generate_options* options);

/* Read and verify the bundle (manifest, every file's sha256) and open the backend. options: NULL for defaults. */
creps_status creps_open(const char* bundle_dir, const creps_options* options, creps_runtime** out);
void creps_close(creps_runtime* runtime);  /* NULL: nothing */

/* The backend's name ("ort-cpu", "ort-cuda", "tensorrt"), valid until creps_close; NULL for a NULL runtime. */
const char* creps_backend_name(const creps_runtime* runtime);
creps_status creps_model(const creps_runtime* runtime, creps_model_info* out);

/* Latents and styles: z of n seeds (out: n*z_dim floats, numpy's RandomState(seed).randn(1, z_dim)); the
 * mapping of n latents (out: n*num_ws*w_dim floats). */
creps_status creps_z(const creps_runtime* runtime, const int64_t* seeds, size_t n, float* out);
creps_status creps_mapping(creps_runtime* runtime, const float* z, size_t n, float psi, float* out);

/* n images of width x height (0, 0: the training resolution) as one malloc'd buffer of n*height*width*3
 * uint8 RGB bytes, image after image, row-major; free it with creps_free. out_width/out_height: the size
 * made (may be NULL). From seeds, latents z (n*z_dim floats) or styles ws (n*num_ws*w_dim floats). */
creps_status creps_generate(creps_runtime* runtime, const int64_t* seeds, size_t n, int width, int height,
                            const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                            int* out_height);
creps_status creps_generate_z(creps_runtime* runtime, const float* z, size_t n, int width, int height,
                              const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                              int* out_height);
creps_status creps_generate_ws(creps_runtime* runtime, const float* ws, size_t n, int width, int height,
                               const creps_generate_options* options, uint8_t** out_rgb, int* out_width,
                               int* out_height);
void creps_free(void* buffer);

/* Stream the image of seeds[i] to paths[i] (PNG, band by band, under a temporary name until complete). */
creps_status creps_save(creps_runtime* runtime, const char* const* paths, const int64_t* seeds, size_t n,
                        int width, int height, const creps_generate_options* options);

#ifdef __cplusplus
}
#endif

#endif /* CREPS_CREPS_H */
