/* Embedding creps in a C app: one seed's image as a binary PPM.  creps_example_c BUNDLE SEED WIDTH HEIGHT OUT.ppm */
#include <creps/creps.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
    creps_runtime* rt = NULL;
    uint8_t* rgb = NULL;
    int64_t seed;
    int width, height;
    FILE* out;
    if (argc != 6) {
        fprintf(stderr, "usage: %s BUNDLE SEED WIDTH HEIGHT OUT.ppm\n", argv[0]);
        return 2;
    }
    seed = atoll(argv[2]);
    if (creps_open(argv[1], NULL, &rt) != CREPS_OK ||
        creps_generate(rt, &seed, 1, atoi(argv[3]), atoi(argv[4]), NULL, &rgb, &width, &height) != CREPS_OK) {
        fprintf(stderr, "error: %s\n", creps_last_error());
        creps_close(rt);
        return 1;
    }
    out = fopen(argv[5], "wb");
    if (!out || fprintf(out, "P6\n%d %d\n255\n", width, height) < 0 ||
        fwrite(rgb, 3, (size_t)width * height, out) != (size_t)width * height || fclose(out) != 0) {
        fprintf(stderr, "error: cannot write %s\n", argv[5]);
        creps_free(rgb);
        creps_close(rt);
        return 1;
    }
    printf("%s: %dx%d from seed %lld\n", creps_backend_name(rt), width, height, (long long)seed);
    creps_free(rgb);
    creps_close(rt);
    return 0;
}
