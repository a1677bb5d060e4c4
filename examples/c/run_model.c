/* A C program using the standalone engine (include/fractalc_rt.h): loads a model file, runs it
 * on a deterministic input (x[i] = ((i * 7919) % 17 - 8) / 8), writes the raw float32 output to
 * a file and prints the shapes. Build (from the installed package's folder):
 *   cc run_model.c -I include -L lib -lfractalc_rt -Wl,-rpath,lib -o run_model
 * or statically: cc run_model.c -I include lib/libfractalc_rt.a -lstdc++ -lpthread -lm
 * Usage: run_model MODEL.frt OUT.bin [BATCH] [THREADS] */
#include <stdio.h>
#include <stdlib.h>

#include "fractalc_rt.h"

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.frt OUT.bin [BATCH] [THREADS]\n", argv[0]);
        return 2;
    }
    const int64_t batch = argc > 3 ? atoi(argv[3]) : 1;
    const int threads = argc > 4 ? atoi(argv[4]) : 0;
    char err[512];
    frt_model* m = NULL;
    int rc = frt_load_file(argv[1], threads, &m, err, sizeof err);
    if (rc != FRT_OK) {
        fprintf(stderr, "load failed (%d): %s\n", rc, err);
        return 1;
    }
    int64_t in[3], out[3];
    int rank;
    frt_input_shape(m, in);
    frt_output_shape(m, &rank, out);
    const size_t n_in = (size_t)(batch * in[0] * in[1] * in[2]);
    const size_t n_out = (size_t)(batch * frt_output_elems(m));
    float* x = malloc(n_in * sizeof *x);
    float* y = malloc(n_out * sizeof *y);
    if (!x || !y) return 1;
    for (size_t i = 0; i < n_in; ++i) x[i] = (float)((long)((i * 7919) % 17) - 8) / 8.0f;
    rc = frt_run(m, x, batch, y, n_out);
    if (rc != FRT_OK) {
        fprintf(stderr, "run failed (%d): %s\n", rc, frt_last_error(m));
        return 1;
    }
    /* a wrong call is an error code and a message, not a crash */
    if (frt_run(m, x, batch, y, n_out - 1) != FRT_ERR_ARG || frt_last_error(m)[0] == '\0') return 1;
    size_t planned = 0, unplanned = 0;
    frt_arena_bytes(m, batch, &planned, &unplanned);
    printf("input %lld x %lld x %lld x %lld; output rank %d, %lld floats per image; isa %s, %d threads; "
           "arena %zu bytes (%zu without reuse)\n", (long long)batch, (long long)in[0], (long long)in[1],
           (long long)in[2], rank, (long long)frt_output_elems(m), frt_isa(m), frt_threads(m), planned, unplanned);
    FILE* f = fopen(argv[2], "wb");
    if (!f || fwrite(y, sizeof *y, n_out, f) != n_out || fclose(f) != 0) return 1;
    free(x);
    free(y);
    frt_free(m);
    return 0;
}
