/* fractalc_rt: the standalone inference engine for fractalc's lowered binary networks.
 *
 * A model file (".frt", written by `fractalc compile --target engine` or
 * fractalc.backends.xnor.engine.write_engine_file; format: backends/xnor/FORMAT.md) holds the
 * planned graph and its weights. The engine runs every operator natively (XNOR/popcount
 * convolutions, bit packing, float convolutions, BN, pools, joins, the classifier): no Python and
 * no onnxruntime. Input: float32 NCHW (N, C, H, W); output: float32, (N, C, H, W) or (N, K).
 *
 * Every function returns FRT_OK (0) or a negative error code and never lets an exception or a
 * signal escape for malformed input: a bad file or argument is an error code plus a message
 * (frt_last_error for a model, the err buffer for loads). A model may be used by one thread at
 * a time (its arena is reused between calls); separate models are independent.
 */
#ifndef FRACTALC_RT_H
#define FRACTALC_RT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FRT_API __attribute__((visibility("default")))
#else
#define FRT_API
#endif

#define FRT_OK 0
#define FRT_ERR_ARG -1       /* a null pointer, a bad size, thread count or ISA name */
#define FRT_ERR_IO -2        /* the file cannot be opened or mapped */
#define FRT_ERR_FORMAT -3    /* the model file is malformed (bad magic, version, checksum, op...) */
#define FRT_ERR_MEMORY -4    /* an allocation failed */
#define FRT_ERR_INTERNAL -5  /* anything else (a bug: please report it) */

#define FRT_FORMAT_VERSION 1

typedef struct frt_model frt_model;

/* Load a model file; the weights are memory-mapped and used in place. `threads` <= 0 means
 * $FRACTALC_THREADS or all CPUs of this process. On failure *out is NULL and a message (always
 * NUL-terminated, truncated to errlen) is written to err when err is not NULL. */
FRT_API int frt_load_file(const char* path, int threads, frt_model** out, char* err, size_t errlen);
/* The same from bytes in memory (copied once into an aligned buffer; the caller keeps its own). */
FRT_API int frt_load_bytes(const void* data, size_t size, int threads, frt_model** out, char* err, size_t errlen);
FRT_API void frt_free(frt_model* m);

/* Input shape without the batch: dims[0..2] = C, H, W. */
FRT_API int frt_input_shape(const frt_model* m, int64_t dims[3]);
/* Output shape without the batch: *rank is 3 (C, H, W) or 1 (K); dims gets rank values. */
FRT_API int frt_output_shape(const frt_model* m, int* rank, int64_t dims[3]);
/* Elements of one image's output. */
FRT_API int64_t frt_output_elems(const frt_model* m);

/* Run `batch` images: input batch*C*H*W floats, output batch*frt_output_elems floats
 * (out_len = how many floats the caller's buffer holds; must be at least that). */
FRT_API int frt_run(frt_model* m, const float* input, int64_t batch, float* output, size_t out_len);

FRT_API int frt_set_threads(frt_model* m, int threads);
FRT_API int frt_threads(const frt_model* m);
/* "portable", "avx2" or "avx512"; "portable" or "neon" on AArch64 (the default: $FRACTALC_ISA
 * or the best this CPU runs). */
FRT_API int frt_set_isa(frt_model* m, const char* isa);
FRT_API const char* frt_isa(const frt_model* m);

/* Bytes of the activation arena (one buffer, values placed by lifetime) a run of `batch`
 * images uses (planned for its pass, below), and the bytes of all values of `batch` images if
 * none were reused and the batch ran at once (for comparison). */
FRT_API int frt_arena_bytes(frt_model* m, int64_t batch, size_t* planned, size_t* unplanned);
/* A batch runs in passes of a few images, so that its values stay in the cache: by default the
 * most images whose arena fits in half the last-level cache (at most 16 MiB), at least one;
 * $FRACTALC_BATCH_IMAGES or frt_set_batch_images(m, k) (k >= 1; 0: the default) force k.
 * The results do not depend on it. frt_batch_images gives the images per pass for `batch`. */
FRT_API int frt_set_batch_images(frt_model* m, int64_t images);
FRT_API int frt_batch_images(frt_model* m, int64_t batch, int64_t* images);
/* Number of operators, and operator i's kind name and the seconds the last profiled run spent
 * in it (profiling: frt_set_profile(m, 1)). */
FRT_API int frt_op_count(const frt_model* m);
FRT_API const char* frt_op_kind(const frt_model* m, int i);
FRT_API int frt_set_profile(frt_model* m, int on);
FRT_API double frt_op_seconds(const frt_model* m, int i);

/* The message of the last failed call on m ("" if none). */
FRT_API const char* frt_last_error(const frt_model* m);
/* The model's metadata (a JSON object, as written by the compiler). */
FRT_API const char* frt_metadata(const frt_model* m);
/* Engine version string. */
FRT_API const char* frt_version(void);

#ifdef __cplusplus
}
#endif
#endif /* FRACTALC_RT_H */
