// The C API (include/fractalc_rt.h) over frt::Engine: every entry point catches everything,
// so no exception crosses it; files are memory-mapped read-only and the weights used in place.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <cstring>
#include <new>
#include <string>

#include "engine.h"
#include "fractalc_rt.h"

struct frt_model {
    std::unique_ptr<frt::Engine> eng;
    std::string err;
    std::mutex mu;  // one run at a time per model (the arena is reused between calls)
};

namespace {

void put(char* err, size_t errlen, const std::string& m) {
    if (!err || errlen == 0) return;
    const size_t n = std::min(errlen - 1, m.size());
    std::memcpy(err, m.data(), n);
    err[n] = '\0';
}

int default_threads() {
    if (const char* v = std::getenv("FRACTALC_THREADS")) {
        const long t = std::strtol(v, nullptr, 10);
        if (t >= 1 && t <= 1024) return static_cast<int>(t);
    }
    cpu_set_t s;
    if (sched_getaffinity(0, sizeof s, &s) == 0) return std::max(1, CPU_COUNT(&s));
    return 1;
}

template <typename F>
int guard(frt_model* m, F&& f) {
    try {
        f();
        if (m) m->err.clear();
        return FRT_OK;
    } catch (const frt::Error& e) {
        if (m) m->err = e.what();
        return e.code;
    } catch (const std::bad_alloc&) {
        if (m) m->err = "out of memory";
        return FRT_ERR_MEMORY;
    } catch (const std::invalid_argument& e) {
        if (m) m->err = e.what();
        return FRT_ERR_ARG;
    } catch (const std::exception& e) {
        if (m) m->err = std::string("internal error: ") + e.what();
        return FRT_ERR_INTERNAL;
    } catch (...) {
        if (m) m->err = "internal error";
        return FRT_ERR_INTERNAL;
    }
}

int finish_load(frt::Bytes b, int threads, frt_model** out, char* err, size_t errlen) {
    frt_model tmp;
    const int rc = guard(&tmp, [&] {
        if (threads > 1024) throw frt::Error(FRT_ERR_ARG, "threads must be <= 1024");
        auto eng = std::make_unique<frt::Engine>(std::move(b));
        eng->threads = threads >= 1 ? threads : default_threads();
        const char* isa = std::getenv("FRACTALC_ISA");
        eng->isa = isa && *isa ? xnor::parse_isa(isa) : xnor::best_isa();
        auto* m = new frt_model();
        m->eng = std::move(eng);
        *out = m;
    });
    if (rc != FRT_OK) put(err, errlen, tmp.err);
    return rc;
}

}  // namespace

extern "C" {

int frt_load_bytes(const void* data, size_t size, int threads, frt_model** out, char* err, size_t errlen) {
    if (!out) {
        put(err, errlen, "out must not be null");
        return FRT_ERR_ARG;
    }
    *out = nullptr;
    if (!data && size) {
        put(err, errlen, "data must not be null");
        return FRT_ERR_ARG;
    }
    frt::Bytes b;
    if (size > (size_t{1} << 40)) {
        put(err, errlen, "model too large");
        return FRT_ERR_ARG;
    }
    void* buf = std::aligned_alloc(64, (size + 63) / 64 * 64 + 64);
    if (!buf) {
        put(err, errlen, "out of memory");
        return FRT_ERR_MEMORY;
    }
    if (size) std::memcpy(buf, data, size);
    b.data = static_cast<const uint8_t*>(buf);
    b.size = size;
    b.keep = std::shared_ptr<void>(buf, [](void* p) { std::free(p); });
    return finish_load(std::move(b), threads, out, err, errlen);
}

int frt_load_file(const char* path, int threads, frt_model** out, char* err, size_t errlen) {
    if (!out || !path) {
        put(err, errlen, "path and out must not be null");
        return FRT_ERR_ARG;
    }
    *out = nullptr;
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        put(err, errlen, std::string("cannot open ") + path + ": " + std::strerror(errno));
        return FRT_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        put(err, errlen, std::string(path) + " is not a regular file");
        return FRT_ERR_IO;
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) {
        close(fd);
        put(err, errlen, "file too short for a fractalc engine header");
        return FRT_ERR_FORMAT;
    }
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        put(err, errlen, std::string("cannot map ") + path + ": " + std::strerror(errno));
        return FRT_ERR_IO;
    }
    frt::Bytes b;
    b.data = static_cast<const uint8_t*>(p);
    b.size = size;
    b.keep = std::shared_ptr<void>(p, [size](void* q) { munmap(q, size); });
    return finish_load(std::move(b), threads, out, err, errlen);
}

void frt_free(frt_model* m) { delete m; }

int frt_input_shape(const frt_model* m, int64_t dims[3]) {
    if (!m || !dims) return FRT_ERR_ARG;
    const auto& v = m->eng->vals[0];
    dims[0] = v.c, dims[1] = v.h, dims[2] = v.w;
    return FRT_OK;
}

int frt_output_shape(const frt_model* m, int* rank, int64_t dims[3]) {
    if (!m || !rank || !dims) return FRT_ERR_ARG;
    const auto& v = m->eng->vals[m->eng->output];
    if (v.kind == frt::kFlat) {
        *rank = 1;
        dims[0] = v.c;
    } else {
        *rank = 3;
        dims[0] = v.c, dims[1] = v.h, dims[2] = v.w;
    }
    return FRT_OK;
}

int64_t frt_output_elems(const frt_model* m) {
    if (!m) return FRT_ERR_ARG;
    return static_cast<int64_t>(m->eng->vals[m->eng->output].elems);
}

int frt_run(frt_model* m, const float* input, int64_t batch, float* output, size_t out_len) {
    if (!m) return FRT_ERR_ARG;
    std::lock_guard<std::mutex> lock(m->mu);
    return guard(m, [&] { m->eng->run(input, batch, output, out_len); });
}

int frt_set_threads(frt_model* m, int threads) {
    if (!m) return FRT_ERR_ARG;
    return guard(m, [&] {
        if (threads < 1 || threads > 1024) throw frt::Error(FRT_ERR_ARG, "threads must be in 1..1024");
        m->eng->threads = threads;
    });
}

int frt_threads(const frt_model* m) { return m ? m->eng->threads : FRT_ERR_ARG; }

int frt_set_isa(frt_model* m, const char* isa) {
    if (!m) return FRT_ERR_ARG;
    return guard(m, [&] {
        if (!isa) throw frt::Error(FRT_ERR_ARG, "isa must not be null");
        m->eng->isa = xnor::parse_isa(isa);
    });
}

const char* frt_isa(const frt_model* m) { return m ? xnor::isa_name(m->eng->isa) : ""; }

int frt_arena_bytes(frt_model* m, int64_t batch, size_t* planned, size_t* unplanned) {
    if (!m) return FRT_ERR_ARG;
    std::lock_guard<std::mutex> lock(m->mu);
    return guard(m, [&] {
        if (batch < 1 || batch > (1 << 16)) throw frt::Error(FRT_ERR_ARG, "batch must be in 1..65536");
        auto [a, b] = m->eng->arena_bytes(batch);
        if (planned) *planned = a;
        if (unplanned) *unplanned = b;
    });
}

int frt_set_batch_images(frt_model* m, int64_t images) {
    if (!m) return FRT_ERR_ARG;
    std::lock_guard<std::mutex> lock(m->mu);
    return guard(m, [&] {
        if (images < 0 || images > (1 << 16)) throw frt::Error(FRT_ERR_ARG, "images per pass must be in 0..65536");
        m->eng->images_per_pass = images;
    });
}

int frt_batch_images(frt_model* m, int64_t batch, int64_t* images) {
    if (!m) return FRT_ERR_ARG;
    std::lock_guard<std::mutex> lock(m->mu);
    return guard(m, [&] {
        if (batch < 1 || batch > (1 << 16)) throw frt::Error(FRT_ERR_ARG, "batch must be in 1..65536");
        if (!images) throw frt::Error(FRT_ERR_ARG, "images must not be null");
        *images = m->eng->batch_images(batch);
    });
}

int frt_op_count(const frt_model* m) { return m ? static_cast<int>(m->eng->ops.size()) : FRT_ERR_ARG; }

const char* frt_op_kind(const frt_model* m, int i) {
    if (!m || i < 0 || static_cast<size_t>(i) >= m->eng->ops.size()) return "";
    return m->eng->ops[i].kind.c_str();
}

int frt_set_profile(frt_model* m, int on) {
    if (!m) return FRT_ERR_ARG;
    m->eng->profile = on != 0;
    return FRT_OK;
}

double frt_op_seconds(const frt_model* m, int i) {
    if (!m || i < 0 || static_cast<size_t>(i) >= m->eng->ops.size()) return -1.0;
    return m->eng->ops[i].seconds;
}

const char* frt_last_error(const frt_model* m) { return m ? m->err.c_str() : "null model"; }

const char* frt_metadata(const frt_model* m) { return m ? m->eng->meta.c_str() : ""; }

const char* frt_version(void) { return "fractalc_rt 0.1 (format 1)"; }

}  // extern "C"
