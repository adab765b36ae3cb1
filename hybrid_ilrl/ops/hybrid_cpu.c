/* The fused hybrid pass for CPUs (hybrid_ilrl.ops.cpu): per row of logits, the gradient
   g = (beta w / tau) p (log p - log q - k) + (A w / tau) (p - e_y) and the statistics k, log p_y, log q_y, H(p),
   log Z, log Z_E. Compiled once by hybrid_ilrl.ops.cpu with the system C compiler and called through ctypes. */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>

/* exp(x) for x <= 88 (Cephes expf polynomial, vectorisable); exactly 0 below -87.3, so exp(-inf) = 0 */
static inline float fexp(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float q = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
               + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    float e = q * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s; memcpy(&s, &bits, 4);
    return x < -87.3f ? 0.0f : e * s;
}

#define BLK 1024

/* One row of length V: reads z, zE; writes g (may alias z; NULL: statistics only) and
   st[0..5] = k, log p_y, log q_y, H, log Z, log Z_E. P: scratch of V floats. cb = beta w / tau, ca = A w / tau,
   it = 1 / tau. A bad row (NaN, +inf, all -inf, overflow) gets NaN statistics and its g is not written. */
static void row(const float* z, const float* zE, float* g, int64_t V, int64_t y, float cb, float ca, float it,
                float* st, float* P) {
    float m = -INFINITY, mE = -INFINITY; int32_t bad = 0;
    #pragma omp simd reduction(max:m, mE) reduction(+:bad)
    for (int64_t i = 0; i < V; i++) {                    /* pass 1: maxima, NaN / +inf */
        float a = z[i], b = zE[i];
        m = a > m ? a : m; mE = b > mE ? b : mE;
        bad += !(a <= FLT_MAX) + !(b <= FLT_MAX);
    }
    m *= it; mE *= it;
    float d = 0.f, dE = 0.f, S = 0.f, T = 0.f; int32_t inf_kl = 0;
    if (bad == 0 && m > -INFINITY && mE > -INFINITY) {
        for (int64_t i0 = 0; i0 < V; i0 += BLK) {         /* pass 2: blocked sums d, d_E, S, T */
            int64_t i1 = i0 + BLK < V ? i0 + BLK : V;
            float d_ = 0.f, dE_ = 0.f, S_ = 0.f, T_ = 0.f; int32_t n_ = 0;
            #pragma omp simd reduction(+:d_, dE_, S_, T_, n_)
            for (int64_t i = i0; i < i1; i++) {
                float a = z[i] * it - m, b = zE[i] * it - mE;      /* a - m, b - m_E */
                int live = a > -INFINITY, fin = b > -INFINITY;
                float p = fexp(a);
                P[i] = p;
                d_ += p; dE_ += fexp(b);
                S_ += (live & fin) ? p * (a - b) : 0.f;
                T_ += live ? p * a : 0.f;
                n_ += live & !fin;
            }
            d += d_; dE += dE_; S += S_; T += T_; inf_kl += n_;
        }
    }
    if (!(d > 0.f) || !(dE > 0.f) || !(d <= FLT_MAX) || !(dE <= FLT_MAX)) {   /* bad row */
        for (int j = 0; j < 6; j++) st[j] = NAN;
        return;
    }
    float ld = logf(d), ldE = logf(dE), Sd = inf_kl ? 0.f : S / d;
    st[0] = inf_kl ? INFINITY : Sd - ld + ldE;
    st[1] = (z[y] * it - m) - ld; st[2] = (zE[y] * it - mE) - ldE;
    st[3] = ld - T / d; st[4] = m + ld; st[5] = mE + ldE;
    if (!g) return;                                      /* statistics only */
    if (inf_kl) cb = 0.f;                                /* dense term of an infinite KL: dropped */
    float inv_d = 1.0f / d;
    #pragma omp simd
    for (int64_t i = 0; i < V; i++) {                    /* pass 3: write g */
        float a = z[i] * it - m, b = zE[i] * it - mE;
        float diff = (a > -INFINITY && b > -INFINITY) ? a - b : 0.f;
        g[i] = P[i] * inv_d * (cb * (diff - Sd) + ca);
    }
    g[y] -= ca;
}

/* Rows r0..r1 of [B, T, V] tensors: row r starts at (r / T) * sB + (r % T) * sT. Per-row vectors y, cb, ca, keep
   are indexed by r; stats is [6, ldst]. g = NULL: statistics only. */
void hybrid_rows_f32(const float* z, const float* zE, float* g, int64_t T,
                     int64_t z_sB, int64_t z_sT, int64_t zE_sB, int64_t zE_sT, int64_t g_sB, int64_t g_sT,
                     int64_t V, int64_t r0, int64_t r1, const int64_t* y, const float* cb, const float* ca,
                     const uint8_t* keep, float it, float* stats, int64_t ldst, float* P) {
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / T, t = r % T;
        float st[6] = {0, 0, 0, 0, 0, 0};
        float* gr = g ? g + b * g_sB + t * g_sT : NULL;
        if (keep[r]) row(z + b * z_sB + t * z_sT, zE + b * zE_sB + t * zE_sT, gr, V, y[r], cb[r], ca[r], it, st, P);
        else if (gr) memset(gr, 0, V * sizeof(float));
        for (int j = 0; j < 6; j++) stats[j * ldst + r] = st[j];
    }
}
