// Mutation fuzzer of the engine's model loader and C API, built and run under ASan + UBSan by
// backends/xnor/sanitize.sh. Usage: fuzz_loader MODEL.frt [ITERATIONS] [SEED]
// Each case mutates a valid model file: random byte flips anywhere, truncation, growth, and
// structured edits of the value and op tables (interesting integers) with the checksum
// recomputed, so the validator behind the checksum is exercised too. A case must either load
// or fail with an error code and a message; a loaded one is run (batch 1 and 2). Any memory
// error or undefined behaviour aborts (the sanitizers); the summary line is checked by the test.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "fractalc_rt.h"

namespace {

uint32_t crc32(const uint8_t* p, size_t n) {
    static uint32_t t[256];
    static bool init = false;
    if (!init) {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        init = true;
    }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; ++i) c = t[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

uint64_t rd64(const std::vector<uint8_t>& b, size_t off) {
    uint64_t v = 0;
    if (off + 8 <= b.size()) std::memcpy(&v, b.data() + off, 8);
    return v;
}

void fix_crc(std::vector<uint8_t>& b) {
    if (b.size() < 96) return;
    const uint32_t c = crc32(b.data() + 96, b.size() - 96);
    std::memcpy(b.data() + 24, &c, 4);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: fuzz_loader MODEL.frt [ITERATIONS] [SEED]\n");
        return 2;
    }
    FILE* f = std::fopen(argv[1], "rb");
    if (!f) return 2;
    std::vector<uint8_t> orig;
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) orig.insert(orig.end(), buf, buf + n);
    std::fclose(f);
    const long iters = argc > 2 ? std::atol(argv[2]) : 2000;
    std::mt19937_64 rng(argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1);
    char err[256];

    // the API's argument checks
    frt_model* m = nullptr;
    int bad = 0;
    bad += frt_load_bytes(nullptr, 10, 1, &m, err, sizeof err) == FRT_ERR_ARG;
    bad += frt_load_bytes(orig.data(), orig.size(), 1, nullptr, err, sizeof err) == FRT_ERR_ARG;
    bad += frt_load_file("/nonexistent/model.frt", 1, &m, err, sizeof err) == FRT_ERR_IO;
    bad += frt_load_file("/", 1, &m, err, sizeof err) == FRT_ERR_IO;
    bad += frt_load_bytes(orig.data(), 0, 1, &m, nullptr, 0) == FRT_ERR_FORMAT;
    bad += frt_run(nullptr, nullptr, 1, nullptr, 0) == FRT_ERR_ARG;
    if (bad != 6) {
        std::fprintf(stderr, "fuzz: argument checks failed (%d of 6)\n", bad);
        return 1;
    }
    if (frt_load_bytes(orig.data(), orig.size(), 2, &m, err, sizeof err) != FRT_OK) {
        std::fprintf(stderr, "fuzz: the seed model does not load: %s\n", err);
        return 1;
    }
    int64_t in[3];
    frt_input_shape(m, in);
    const size_t in_elems = static_cast<size_t>(in[0] * in[1] * in[2]);
    std::vector<float> x(2 * in_elems);
    for (auto& v : x) v = std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng);
    std::vector<float> y(2 * static_cast<size_t>(frt_output_elems(m)));
    bad = 0;
    bad += frt_run(m, x.data(), 0, y.data(), y.size()) == FRT_ERR_ARG;
    bad += frt_run(m, x.data(), 2, y.data(), y.size() - 1) == FRT_ERR_ARG;
    bad += frt_run(m, nullptr, 1, y.data(), y.size()) == FRT_ERR_ARG;
    bad += frt_set_threads(m, 0) == FRT_ERR_ARG;
    bad += frt_set_isa(m, "sparc") == FRT_ERR_ARG;
    bad += frt_run(m, x.data(), 2, y.data(), y.size()) == FRT_OK;
    int64_t per = 0;
    bad += frt_set_batch_images(m, -1) == FRT_ERR_ARG;
    bad += frt_batch_images(m, 0, &per) == FRT_ERR_ARG;
    bad += frt_batch_images(m, 2, nullptr) == FRT_ERR_ARG;
    // a batch in passes of one image: the same bytes as the default passes
    std::vector<float> y1(y.size());
    bad += frt_set_batch_images(m, 1) == FRT_OK && frt_batch_images(m, 2, &per) == FRT_OK && per == 1;
    bad += frt_run(m, x.data(), 2, y1.data(), y1.size()) == FRT_OK &&
           std::memcmp(y.data(), y1.data(), y.size() * sizeof(float)) == 0;
    frt_free(m);
    if (bad != 11) {
        std::fprintf(stderr, "fuzz: run argument checks failed (%d of 11)\n", bad);
        return 1;
    }

    const uint64_t tab0 = rd64(orig, 40), tab1 = rd64(orig, 56);  // values_off .. blob_off
    static const int64_t interesting[] = {0, 1, -1, 2, 3, 7, 63, 64, 65, 255, 4096, 65535, 65536, 1 << 20,
                                          (1 << 20) + 1, 0x7fffffff, -0x7fffffff - 1, 0xffffffffLL, 1 << 28};
    long accepted = 0, rejected = 0, ran = 0;
    for (long it = 0; it < iters; ++it) {
        std::vector<uint8_t> b = orig;
        const int kind = static_cast<int>(rng() % 6);
        if (kind == 0) {  // byte flips, checksum left wrong
            for (int k = 0, nk = 1 + rng() % 8; k < nk; ++k) b[rng() % b.size()] ^= 1u << (rng() % 8);
        } else if (kind == 1) {  // truncation (sometimes with a consistent header and checksum)
            b.resize(rng() % b.size());
            if (b.size() >= 96 && rng() % 2) {
                const uint64_t sz = b.size();
                std::memcpy(b.data() + 16, &sz, 8);
                fix_crc(b);
            }
        } else if (kind == 2) {  // growth
            b.resize(b.size() + 1 + rng() % 128, static_cast<uint8_t>(rng()));
            if (rng() % 2) {
                const uint64_t sz = b.size();
                std::memcpy(b.data() + 16, &sz, 8);
                fix_crc(b);
            }
        } else if (kind == 3 || kind == 4) {  // structured: table integers, checksum fixed
            for (int k = 0, nk = 1 + rng() % 3; k < nk; ++k) {
                if (tab1 <= tab0 + 4 || tab1 > b.size()) break;
                const uint64_t pos = (tab0 + rng() % (tab1 - tab0 - 4)) & ~uint64_t{3};
                int32_t v;
                if (kind == 3) {
                    v = static_cast<int32_t>(interesting[rng() % (sizeof interesting / sizeof *interesting)]);
                } else {
                    std::memcpy(&v, b.data() + pos, 4);
                    v += static_cast<int32_t>(rng() % 5) - 2;
                }
                std::memcpy(b.data() + pos, &v, 4);
            }
            fix_crc(b);
        } else {  // header fields, checksum fixed
            const uint64_t pos = 8 + (rng() % 22) * 4;
            const int32_t v = static_cast<int32_t>(interesting[rng() % (sizeof interesting / sizeof *interesting)]);
            std::memcpy(b.data() + pos, &v, 4);
            fix_crc(b);
        }
        frt_model* mm = nullptr;
        err[0] = 'x';
        const int rc = frt_load_bytes(b.data(), b.size(), 1 + static_cast<int>(rng() % 2), &mm, err, sizeof err);
        if (rc != FRT_OK) {
            if (mm != nullptr || err[0] == '\0' || rc >= 0) {
                std::fprintf(stderr, "fuzz: a failed load must give no model and a message (rc %d)\n", rc);
                return 1;
            }
            ++rejected;
            continue;
        }
        ++accepted;
        size_t planned = 0;
        int64_t d[3];
        frt_input_shape(mm, d);
        if (frt_arena_bytes(mm, 2, &planned, nullptr) == FRT_OK && planned < (size_t{256} << 20) &&
            d[0] * d[1] * d[2] <= static_cast<int64_t>(1 << 22)) {
            std::vector<float> xi(2 * static_cast<size_t>(d[0] * d[1] * d[2]), 0.5f);
            std::vector<float> yo(2 * static_cast<size_t>(frt_output_elems(mm)));
            frt_set_batch_images(mm, static_cast<int64_t>(rng() % 2));  // passes of 1 image, or the default
            for (int64_t batch = 1; batch <= 2; ++batch)
                if (frt_run(mm, xi.data(), batch, yo.data(), yo.size()) != FRT_OK) {
                    std::fprintf(stderr, "fuzz: an accepted model failed to run: %s\n", frt_last_error(mm));
                    return 1;
                }
            ++ran;
        }
        frt_free(mm);
    }
    std::printf("fuzz: %ld cases, %ld rejected with an error, %ld accepted, %ld run: OK\n", iters, rejected,
                accepted, ran);
    return 0;
}
