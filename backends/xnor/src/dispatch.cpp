// Run-time CPU dispatch and the persistent worker pool.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "conv_impl.h"
#include "xnor.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define XNOR_X86 1
#endif
#if defined(__aarch64__)
#define XNOR_NEON 1  // Advanced SIMD is part of the AArch64 base ISA: always available
#endif

namespace xnor {

bool cpu_supports(Isa isa) {
    switch (isa) {
        case Isa::portable: return true;
#ifdef XNOR_X86
        case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vpopcntdq");
#endif
#ifdef XNOR_NEON
        case Isa::neon: return true;
#endif
        default: return false;
    }
}

Isa best_isa() {
#ifdef XNOR_NEON
    return Isa::neon;
#endif
    if (cpu_supports(Isa::avx512)) return Isa::avx512;
    if (cpu_supports(Isa::avx2)) return Isa::avx2;
    return Isa::portable;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        case Isa::neon: return "neon";
        default: return "portable";
    }
}

Isa parse_isa(const std::string& name) {
    Isa isa;
    if (name == "portable") isa = Isa::portable;
    else if (name == "avx2") isa = Isa::avx2;
    else if (name == "avx512") isa = Isa::avx512;
#ifdef XNOR_NEON
    else if (name == "neon") isa = Isa::neon;
    else throw std::invalid_argument("unknown ISA '" + name + "' (expected portable or neon)");
#else
    else throw std::invalid_argument("unknown ISA '" + name + "' (expected portable, avx2 or avx512)");
#endif
    if (!cpu_supports(isa))
        throw std::invalid_argument(std::string("this CPU cannot run the ") + isa_name(isa) + " path");
    return isa;
}

WorkFn work_fn(Isa isa) {
#ifdef XNOR_X86
    if (isa == Isa::avx512) return work_avx512;
    if (isa == Isa::avx2) return work_avx2;
#endif
#ifdef XNOR_NEON
    if (isa == Isa::neon) return work_neon;
#endif
    return work_portable;
}

int pixel_tile(Isa isa) {
    if (isa == Isa::avx512) return 6;
    if (isa == Isa::avx2) return 3;
    if (isa == Isa::neon) return 4;  // two 2-pixel passes of kernel_neon.cpp
    return 4;
}

namespace {

inline void cpu_relax() {
#ifdef XNOR_X86
    _mm_pause();
#endif
#ifdef XNOR_NEON
    asm volatile("yield");
#endif
}

struct Task {
    void (*fn)(void*, int, int);
    void* ctx;
    int nparts;
    int nthreads;
    std::atomic<int> next{0};
};

// Runs parts of a task on whichever threads show up: on a shared machine a worker may be
// descheduled for milliseconds, and then the caller simply takes its parts. Which thread runs
// a part never changes the result. Workers spin briefly after a task (layers of a network arrive
// microseconds apart) and then sleep on a futex, so an idle pool costs nothing.
class Pool {
public:
    void run(int nthreads, int nparts, void (*f)(void*, int, int), void* ctx) {
        std::lock_guard<std::mutex> lock(call_mu_);
        grow(nthreads - 1);
        Task t;
        t.fn = f;
        t.ctx = ctx;
        t.nparts = nparts;
        t.nthreads = nthreads;
        task_.store(&t);
        gen_.fetch_add(1);
        gen_.notify_all();
        drain(t);
        // Dekker-style handshake (all seq_cst): after this store no worker can newly pick up
        // the task, and any worker that already did is counted in inside_.
        task_.store(nullptr);
        int spins = 0;
        while (inside_.load() != 0) {
            if (++spins < 4096) cpu_relax();
            else std::this_thread::yield();
        }
    }

private:
    static void drain(Task& t) {
        for (int i; (i = t.next.fetch_add(1, std::memory_order_relaxed)) < t.nparts;)
            t.fn(t.ctx, i, t.nparts);
    }

    void grow(int n) {
        while (static_cast<int>(workers_) < n) {
            const int id = static_cast<int>(++workers_);
            const uint64_t seen = gen_.load();
            // Detached on purpose: the pool lives for the whole process and joining at
            // interpreter exit could block.
            std::thread([this, id, seen] { loop(id, seen); }).detach();
        }
    }

    void loop(int id, uint64_t seen) {
        for (;;) {
            uint64_t g;
            const auto t0 = std::chrono::steady_clock::now();
            int spins = 0;
            while ((g = gen_.load(std::memory_order_acquire)) == seen) {
                cpu_relax();
                if ((++spins & 255) == 0 && std::chrono::steady_clock::now() - t0 > spin_)
                    gen_.wait(seen, std::memory_order_acquire);
            }
            seen = g;
            inside_.fetch_add(1);
            Task* t = task_.load();
            if (t != nullptr && id < t->nthreads) drain(*t);
            inside_.fetch_sub(1);
        }
    }

    // How long an idle worker spins before sleeping: FRACTALC_SPIN_US, default 200 us (a network's
    // layers arrive closer together than that; a sleeping worker costs a futex wake-up).
    const std::chrono::microseconds spin_{[] {
        const char* v = std::getenv("FRACTALC_SPIN_US");
        const long us = v ? std::strtol(v, nullptr, 10) : 200;
        return us < 0 ? 0L : us > 1000000 ? 1000000L : us;
    }()};
    std::mutex call_mu_;
    std::atomic<uint64_t> gen_{0};
    std::atomic<Task*> task_{nullptr};
    std::atomic<int> inside_{0};
    unsigned workers_ = 0;
};

}  // namespace

void parallel_run(int nthreads, int nparts, void (*f)(void* ctx, int part, int nparts), void* ctx) {
    if (nthreads <= 1 || nparts <= 1) {
        f(ctx, 0, 1);
        return;
    }
    static Pool* pool = new Pool();  // never destroyed: see Pool::grow
    pool->run(nthreads, nparts, f, ctx);
}

}  // namespace xnor
