// fractalc-run: run an engine model file (.frt) on a .npy input and write a .npy output, with
// no Python. Usage: fractalc-run MODEL.frt INPUT.npy OUTPUT.npy [--threads N] [--isa NAME]
//                   [--repeat R] [--profile]
// The input must be a little-endian float32 C-order array (N, C, H, W). With --repeat, the
// median wall time per run is printed to stderr; --profile prints the time per op kind.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "fractalc_rt.h"

namespace {

int die(const std::string& m) {
    std::fprintf(stderr, "fractalc-run: %s\n", m.c_str());
    return 1;
}

bool read_npy(const char* path, std::vector<int64_t>& shape, std::vector<float>& data, std::string& err) {
    FILE* f = std::fopen(path, "rb");
    if (!f) return err = std::string("cannot open ") + path, false;
    std::vector<unsigned char> b;
    unsigned char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
    std::fclose(f);
    if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) return err = "not a .npy file", false;
    const int major = b[6];
    size_t hlen, hoff;
    if (major == 1) {
        hlen = b[8] | (b[9] << 8);
        hoff = 10;
    } else if (major == 2 || major == 3) {
        if (b.size() < 12) return err = "truncated .npy header", false;
        hlen = b[8] | (b[9] << 8) | (size_t(b[10]) << 16) | (size_t(b[11]) << 24);
        hoff = 12;
    } else {
        return err = "unsupported .npy version", false;
    }
    if (hlen > b.size() - hoff) return err = "truncated .npy header", false;
    const std::string h(reinterpret_cast<const char*>(b.data() + hoff), hlen);
    if (h.find("'descr': '<f4'") == std::string::npos) return err = "input must be float32 ('<f4')", false;
    if (h.find("'fortran_order': False") == std::string::npos) return err = "input must be C-ordered", false;
    const size_t s0 = h.find("'shape': (");
    if (s0 == std::string::npos) return err = "no shape in the .npy header", false;
    const size_t s1 = h.find(')', s0);
    if (s1 == std::string::npos) return err = "bad shape in the .npy header", false;
    std::string dims = h.substr(s0 + 10, s1 - s0 - 10);
    shape.clear();
    int64_t count = 1;
    for (size_t p = 0; p < dims.size();) {
        while (p < dims.size() && (dims[p] == ' ' || dims[p] == ',')) ++p;
        if (p >= dims.size()) break;
        char* end;
        const long long v = std::strtoll(dims.c_str() + p, &end, 10);
        if (end == dims.c_str() + p || v < 0 || v > (1LL << 40)) return err = "bad shape in the .npy header", false;
        shape.push_back(v);
        count *= v;
        if (count > (1LL << 36)) return err = "input too large", false;
        p = end - dims.c_str();
    }
    const size_t off = hoff + hlen;
    if (b.size() - off != static_cast<size_t>(count) * 4) return err = "data size does not match the shape", false;
    data.resize(count);
    std::memcpy(data.data(), b.data() + off, count * 4);
    return true;
}

bool write_npy(const char* path, const std::vector<int64_t>& shape, const float* data, size_t count) {
    std::string dims;
    for (int64_t d : shape) dims += std::to_string(d) + ", ";
    if (shape.size() > 1) dims.erase(dims.size() - 2);  // "(n, c)"; one dim keeps "(n,)"
    else dims.erase(dims.size() - 1);
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    FILE* f = std::fopen(path, "wb");
    if (!f) return false;
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(h.size() & 0xff),
                                   static_cast<unsigned char>(h.size() >> 8)};
    bool ok = std::fwrite(pre, 1, 10, f) == 10 && std::fwrite(h.data(), 1, h.size(), f) == h.size() &&
              std::fwrite(data, 4, count, f) == count;
    ok = std::fclose(f) == 0 && ok;
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<const char*> pos;
    int threads = 0, repeat = 1;
    const char* isa = nullptr;
    bool profile = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--isa" && i + 1 < argc) isa = argv[++i];
        else if (a == "--repeat" && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
        else if (a == "--profile") profile = true;
        else if (a == "-h" || a == "--help") {
            std::printf("usage: fractalc-run MODEL.frt INPUT.npy OUTPUT.npy [--threads N] [--isa NAME] "
                        "[--repeat R] [--profile]\n");
            return 0;
        } else pos.push_back(argv[i]);
    }
    if (pos.size() != 3) return die("usage: fractalc-run MODEL.frt INPUT.npy OUTPUT.npy [options]");
    char err[512];
    frt_model* m = nullptr;
    if (frt_load_file(pos[0], threads, &m, err, sizeof err) != FRT_OK) return die(err);
    if (isa && frt_set_isa(m, isa) != FRT_OK) {
        const std::string e = frt_last_error(m);
        frt_free(m);
        return die(e);
    }
    std::vector<int64_t> shape;
    std::vector<float> x;
    std::string e;
    if (!read_npy(pos[1], shape, x, e)) {
        frt_free(m);
        return die(std::string(pos[1]) + ": " + e);
    }
    int64_t in[3];
    frt_input_shape(m, in);
    if (shape.size() != 4 || shape[1] != in[0] || shape[2] != in[1] || shape[3] != in[2] || shape[0] < 1) {
        frt_free(m);
        return die("input must have shape (N, " + std::to_string(in[0]) + ", " + std::to_string(in[1]) + ", " +
                   std::to_string(in[2]) + ")");
    }
    const int64_t n = shape[0];
    int rank;
    int64_t od[3];
    frt_output_shape(m, &rank, od);
    const size_t count = static_cast<size_t>(n * frt_output_elems(m));
    std::vector<float> y(count);
    std::vector<double> times;
    frt_set_profile(m, profile ? 1 : 0);
    std::map<std::string, double> per_kind;
    for (int r = 0; r < repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (frt_run(m, x.data(), n, y.data(), y.size()) != FRT_OK) {
            const std::string msg = frt_last_error(m);
            frt_free(m);
            return die(msg);
        }
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (profile)
            for (int i = 0; i < frt_op_count(m); ++i) per_kind[frt_op_kind(m, i)] += frt_op_seconds(m, i) / repeat;
    }
    std::vector<int64_t> oshape{n};
    for (int k = 0; k < rank; ++k) oshape.push_back(od[k]);
    if (!write_npy(pos[2], oshape, y.data(), count)) {
        frt_free(m);
        return die(std::string("cannot write ") + pos[2]);
    }
    std::sort(times.begin(), times.end());
    size_t planned = 0, unplanned = 0;
    frt_arena_bytes(m, n, &planned, &unplanned);
    std::fprintf(stderr, "fractalc-run: %s isa=%s threads=%d batch=%lld median %.3f ms over %d run(s); arena %.2f MiB "
                 "(%.2f MiB unplanned)\n", pos[2], frt_isa(m), frt_threads(m), static_cast<long long>(n),
                 times[times.size() / 2] * 1e3, repeat, planned / 1048576.0, unplanned / 1048576.0);
    for (auto& [k, s] : per_kind) std::fprintf(stderr, "  %-24s %8.3f ms\n", k.c_str(), s * 1e3);
    frt_free(m);
    return 0;
}
