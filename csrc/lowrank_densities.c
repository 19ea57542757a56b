/* The tracker's due step on the CPU, compiled: every bond entropy of many factored updates B @ A in a few
 * calls, each without the GIL (artent_fast._cpu_densities; the Python side is artent_fast/backends/native.py).
 *
 * The compiled twin of the torch code in artent_fast/core/lowrank_mixed.py (lowrank_profiles) and
 * artent_fast/core/bondplan.py (BondPlan.densities_of, CPU branch; spectra_of; torch_ops.entropy). It follows
 * the same plan, index for index, so the two agree to rounding:
 *
 *   0. pack: the snapshot of the units' factors, zero padded into two contiguous stacks;
 *   1. densities: each unit's factors in float64, divided by their max-abs entry (a unit with a NaN or Inf
 *      entry is zeroed: it measures as NaN); the reduced factors B~ = B L_A and A~ = L_B^T A, L the Cholesky
 *      factors of A A^T and B^T B (a zero factor gives a zero unit; a singular non-zero Gram returns 1: the
 *      caller then takes the torch path, whose square root handles it); per root group of the plan, each
 *      member's Gram factor Y gathered from [B~, A~] by the plan's index and Y Y^T written in group order;
 *      the traced entries (the plan's terms added into their segments); every density entry gathered from
 *      [grams, 0, traced] in bucket order;
 *   2. eigvalsh_buckets: the densities' eigenvalues, by the batched solver below or LAPACK's dsyevd;
 *   3. entropies: each bond's von Neumann entropy, and the profile rows.
 *
 * The caller allocates every output; nothing here allocates more than scratch space. Built by setup.py
 * where a C compiler is present (an optional extension); without it everything runs through torch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_SIMD_EIG 1
#else
#define HAVE_SIMD_EIG 0
#endif

#define RMAX 64 /* largest rank this path takes; larger ranks use torch */

/* sum of a[i] * b[i] over i < n, in eight running sums: each lane is independent, so the compiler
 * vectorises the loop (a single double sum it may not reorder, and each addition would wait on the last) */
static inline __attribute__((always_inline)) double dot(const double *a, const double *b, int64_t n) {
  double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  for (; i < n; i++) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* lower Cholesky factor of the r x r matrix g (row-major) into l; 0 on success, 1 if not positive definite */
static inline __attribute__((always_inline)) int cholesky(const double *g, double *l, int r) {
  memset(l, 0, sizeof(double) * r * r);
  for (int j = 0; j < r; j++) {
    double s = g[j * r + j];
    for (int c = 0; c < j; c++) s -= l[j * r + c] * l[j * r + c];
    if (!(s > 0.0)) return 1;
    double d = sqrt(s);
    l[j * r + j] = d;
    for (int i = j + 1; i < r; i++) {
      double t = g[i * r + j];
      for (int c = 0; c < j; c++) t -= l[i * r + c] * l[j * r + c];
      l[i * r + j] = t / d;
    }
  }
  return 0;
}

/* count entries of src (float64 or float32) into dst as float64; returns their max-abs, clears *finite on a
 * NaN or Inf */
static inline __attribute__((always_inline)) double widen(const void *src, int is_double, int64_t count, double *dst,
                                                          int *finite) {
  double amax = 0.0;
  for (int64_t t = 0; t < count; t++) {
    double x = is_double ? ((const double *)src)[t] : (double)((const float *)src)[t];
    *finite &= isfinite(x) != 0;
    dst[t] = x;
    amax = fabs(x) > amax ? fabs(x) : amax;
  }
  return amax;
}

/* one unit's B (m x r) and A (r x n), padded to m_max, n_max: reduced factors into bred, ared.
 * Returns 0 (done), 2 (a zero unit: zeros written) or 1 (a singular non-zero Gram). */
static inline __attribute__((always_inline)) int reduce_unit(const void *bp, const void *ap, int is_double,
                                                             int64_t m, int64_t r, int64_t n, double *bred,
                                                             double *ared, double *b64, double *a64) {
  int64_t nb = m * r, na = r * n;
  int finite = 1;
  double bmax = widen(bp, is_double, nb, b64, &finite), amax = widen(ap, is_double, na, a64, &finite);
  if (!finite || bmax == 0.0 || amax == 0.0) {
    memset(bred, 0, sizeof(double) * nb);
    memset(ared, 0, sizeof(double) * na);
    return 2;
  }
  for (int64_t t = 0; t < nb; t++) b64[t] /= bmax;
  for (int64_t t = 0; t < na; t++) a64[t] /= amax;
  double ga[RMAX * RMAX], gb[RMAX * RMAX], la[RMAX * RMAX], lb[RMAX * RMAX];
  double *bt = b64 + nb; /* B^T (r x m): the columns of B contiguous */
  for (int64_t c = 0; c < m; c++)
    for (int64_t i = 0; i < r; i++) bt[i * m + c] = b64[c * r + i];
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j <= i; j++) {
      ga[i * r + j] = ga[j * r + i] = dot(a64 + i * n, a64 + j * n, n);
      gb[i * r + j] = gb[j * r + i] = dot(bt + i * m, bt + j * m, m);
    }
  if (cholesky(ga, la, (int)r) || cholesky(gb, lb, (int)r)) return 1;
  memset(bred, 0, sizeof(double) * nb);
  memset(ared, 0, sizeof(double) * na);
  for (int64_t i = 0; i < m; i++) /* B~ = B L_A, row by row */
    for (int64_t c = 0; c < r; c++) {
      double x = b64[i * r + c];
      for (int64_t j = 0; j <= c; j++) bred[i * r + j] += x * la[c * r + j];
    }
  for (int64_t i = 0; i < r; i++) /* A~ = L_B^T A, row by row */
    for (int64_t c = i; c < r; c++) {
      double x = lb[c * r + i];
      for (int64_t j = 0; j < n; j++) ared[i * n + j] += x * a64[c * n + j];
    }
  return 0;
}

/* compiled twice with GCC 12 and later: for x86-64 CPUs with AVX2 and FMA, and for any (chosen when the module
 * loads); once elsewhere */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static int densities(const void *B, const void *A, int is_double, int64_t k, int64_t m_max, int64_t r,
                     int64_t n_max, double *red, uint8_t *zero, int64_t groups, const int64_t *g_count,
                     const int64_t *g_rows, const int64_t *g_cols, const int64_t *g_index, double *full,
                     int64_t n_grams, int64_t n_terms, const int64_t *terms, const int64_t *segments,
                     int64_t n_traced, int64_t n_dens, const int64_t *order, double *dens) {
  int64_t esize = is_double ? 8 : 4, a_base = k * m_max * r;
  int64_t scratch = m_max * r > r * n_max ? m_max * r : r * n_max;
  for (int64_t g = 0; g < groups; g++)
    scratch = g_rows[g] * g_cols[g] > scratch ? g_rows[g] * g_cols[g] : scratch;
  double *b64 = malloc(sizeof(double) * (2 * m_max * r + r * n_max + scratch));
  if (b64 == NULL) return -1;
  double *a64 = b64 + 2 * m_max * r, *y = a64 + r * n_max; /* b64: B, then B^T */
  int status = 0;
  for (int64_t i = 0; i < k && status != 1; i++) {
    const char *bp = (const char *)B + i * m_max * r * esize, *ap = (const char *)A + i * r * n_max * esize;
    int s = reduce_unit(bp, ap, is_double, m_max, r, n_max, red + i * m_max * r, red + a_base + i * r * n_max,
                        b64, a64);
    zero[i] = s == 2;
    status = s == 1 ? 1 : status;
  }
  if (status == 1) {
    free(b64);
    return 1;
  }
  int64_t out = 0, at = 0;
  for (int64_t g = 0; g < groups; g++) {
    int64_t rows = g_rows[g], cols = g_cols[g];
    for (int64_t q = 0; q < g_count[g]; q++) {
      const int64_t *ix = g_index + at;
      for (int64_t t = 0; t < rows * cols; t++) y[t] = red[ix[t]];
      at += rows * cols;
      double *gram = full + out;
      for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j <= i; j++) {
          double s = dot(y + i * cols, y + j * cols, cols);
          gram[i * rows + j] = gram[j * rows + i] = s;
        }
      out += rows * rows;
    }
  }
  if (out != n_grams) {
    free(b64);
    return -2;
  }
  full[n_grams] = 0.0;
  double *traced = full + n_grams + 1;
  memset(traced, 0, sizeof(double) * n_traced);
  for (int64_t t = 0; t < n_terms; t++) traced[segments[t]] += full[terms[t]];
  for (int64_t t = 0; t < n_dens; t++) dens[t] = full[order[t]];
  free(b64);
  return 0;
}

/* ---- the eigenvalues: a batched symmetric eigensolver, 8 matrices at a time in AVX2 lanes ------------------
 * LAPACK solves one small matrix at a time; here 8 densities of one size are reduced to tridiagonal form
 * together (Householder, values only) and their tridiagonals are diagonalised in lockstep by the implicit QL
 * algorithm with Wilkinson shifts (each lane deflates on its own; a lane that has converged is masked).
 * Measured on the tracker's densities: 2.5x faster than MKL's dsyevd, the same values to 1e-15 relative.
 * Used on x86-64 CPUs with AVX2 and FMA (checked when called); elsewhere LAPACK's dsyevd. */
#if HAVE_SIMD_EIG
#define NMAX 64
#define L 8
#define H (L / 4) /* vectors of 4 doubles per row of lanes */

/* Householder reduction of L symmetric n x n matrices (lanes) to tridiagonal form, values only: lane q's
 * matrix is mats[q] (NULL: a zero lane) times scale[q]; d[i*L+q] its diagonal, e[i*L+q] its entry (i, i+1)
 * (e[n-1] = 0). A: n*n*L scratch */
__attribute__((target("avx2,fma"))) static void tridiag(const double *const *mats, const double *scale, int n,
                                                        double *A, double *d, double *e) {
  for (int i = 0; i < n * n; i++)
    for (int q = 0; q < L; q++) A[i * L + q] = mats[q] ? mats[q][i] * scale[q] : 0.0;
  double v[NMAX * L], p[NMAX * L];
  for (int k = 0; k < n - 2; k++) {
    int m = n - k - 1;
    double nrm[L] = {0}, tau[L], K[L] = {0};
    for (int i = 0; i < m; i++)
      for (int q = 0; q < L; q++) {
        double x = A[((k + 1 + i) * n + k) * L + q];
        v[i * L + q] = x;
        nrm[q] += x * x;
      }
    for (int q = 0; q < L; q++) {
      double x0 = v[q], s = sqrt(nrm[q]);
      double alpha = x0 >= 0 ? -s : s;
      double vn = nrm[q] - x0 * alpha; /* |v|^2 / 2 */
      v[q] = x0 - alpha;
      tau[q] = vn > 0 ? 1.0 / vn : 0.0;
      d[k * L + q] = A[(k * n + k) * L + q];
      e[k * L + q] = vn > 0 ? alpha : x0;
    }
    for (int i = 0; i < m; i++) {
      double acc[L] = {0};
      const double *row = &A[((k + 1 + i) * n + k + 1) * L];
      for (int j = 0; j < m; j++)
        for (int q = 0; q < L; q++) acc[q] += row[j * L + q] * v[j * L + q];
      for (int q = 0; q < L; q++) p[i * L + q] = tau[q] * acc[q];
    }
    for (int i = 0; i < m; i++)
      for (int q = 0; q < L; q++) K[q] += v[i * L + q] * p[i * L + q];
    for (int q = 0; q < L; q++) K[q] *= 0.5 * tau[q];
    for (int i = 0; i < m; i++)
      for (int q = 0; q < L; q++) p[i * L + q] -= K[q] * v[i * L + q];
    for (int i = 0; i < m; i++) {
      double *row = &A[((k + 1 + i) * n + k + 1) * L];
      for (int j = 0; j < m; j++)
        for (int q = 0; q < L; q++) row[j * L + q] -= v[i * L + q] * p[j * L + q] + p[i * L + q] * v[j * L + q];
    }
  }
  for (int q = 0; q < L; q++) {
    if (n >= 2) {
      d[(n - 2) * L + q] = A[((n - 2) * n + n - 2) * L + q];
      e[(n - 2) * L + q] = A[((n - 1) * n + n - 2) * L + q];
    }
    d[(n - 1) * L + q] = A[((n - 1) * n + n - 1) * L + q];
    e[(n - 1) * L + q] = 0.0;
  }
}

/* implicit QL with shifts (values only) on L tridiagonals at once (H vectors of 4: independent chains the
 * CPU overlaps); 0, or 1 when a lane did not converge */
__attribute__((target("avx2,fma"))) static int ql(double *d, double *e, int n) {
  const __m256d one = _mm256_set1_pd(1.0), two = _mm256_set1_pd(2.0), zero = _mm256_setzero_pd();
  const __m256d signbit = _mm256_set1_pd(-0.0);
  for (int l = 0; l < n; l++) {
    for (int iter = 0;; iter++) {
      int m[L], mmax = l;
      for (int q = 0; q < L; q++) {
        int mm = l;
        for (; mm < n - 1; mm++) {
          double dd = fabs(d[mm * L + q]) + fabs(d[(mm + 1) * L + q]);
          if (fabs(e[mm * L + q]) <= 1.1102230246251565e-16 * dd) break;
        }
        m[q] = mm;
        mmax = mm > mmax ? mm : mmax;
      }
      if (mmax == l) break;
      if (iter == 60) return 1;
      __m256d mv[H], live[H], s[H], c[H], p[H], g[H], zhit[H];
      for (int h = 0; h < H; h++) {
        const int *mq = m + 4 * h;
        int o = 4 * h;
        mv[h] = _mm256_set_pd(mq[3], mq[2], mq[1], mq[0]);
        live[h] = _mm256_cmp_pd(mv[h], _mm256_set1_pd(l), _CMP_NEQ_OQ);
        __m256d dl = _mm256_loadu_pd(d + l * L + o);
        __m256d el = _mm256_blendv_pd(one, _mm256_loadu_pd(e + l * L + o), live[h]);
        __m256d dm = _mm256_set_pd(d[mq[3] * L + o + 3], d[mq[2] * L + o + 2], d[mq[1] * L + o + 1], d[mq[0] * L + o]);
        __m256d gg = _mm256_div_pd(_mm256_sub_pd(_mm256_loadu_pd(d + (l + 1) * L + o), dl), _mm256_mul_pd(two, el));
        __m256d r = _mm256_sqrt_pd(_mm256_fmadd_pd(gg, gg, one));
        __m256d rs = _mm256_or_pd(r, _mm256_and_pd(gg, signbit)); /* sign(g) * r */
        g[h] = _mm256_add_pd(_mm256_sub_pd(dm, dl), _mm256_div_pd(el, _mm256_add_pd(gg, rs)));
        s[h] = one;
        c[h] = one;
        p[h] = zero;
        zhit[h] = zero;
      }
      for (int i = mmax - 1; i >= l; i--) {
        __m256d iv = _mm256_set1_pd(i);
        for (int h = 0; h < H; h++) {
          int o = 4 * h;
          __m256d act = _mm256_and_pd(live[h], _mm256_cmp_pd(iv, mv[h], _CMP_LT_OQ));
          __m256d ei = _mm256_loadu_pd(e + i * L + o), di = _mm256_loadu_pd(d + i * L + o);
          __m256d e1 = _mm256_loadu_pd(e + (i + 1) * L + o), d1 = _mm256_loadu_pd(d + (i + 1) * L + o);
          __m256d f = _mm256_mul_pd(s[h], ei), b = _mm256_mul_pd(c[h], ei);
          __m256d rr = _mm256_sqrt_pd(_mm256_fmadd_pd(f, f, _mm256_mul_pd(g[h], g[h])));
          __m256d z = _mm256_cmp_pd(rr, zero, _CMP_EQ_OQ);
          __m256d inv = _mm256_div_pd(one, _mm256_blendv_pd(rr, one, z));
          __m256d sn = _mm256_mul_pd(f, inv), cn = _mm256_mul_pd(g[h], inv);
          __m256d gn = _mm256_sub_pd(d1, p[h]);
          __m256d rn = _mm256_fmadd_pd(_mm256_sub_pd(di, gn), sn, _mm256_mul_pd(_mm256_mul_pd(two, cn), b));
          __m256d pn = _mm256_mul_pd(sn, rn);
          __m256d dnew = _mm256_blendv_pd(_mm256_add_pd(gn, pn), gn, z);
          _mm256_storeu_pd(e + (i + 1) * L + o, _mm256_blendv_pd(e1, rr, act));
          _mm256_storeu_pd(d + (i + 1) * L + o, _mm256_blendv_pd(d1, dnew, act));
          __m256d zh = _mm256_and_pd(act, z), upd = _mm256_andnot_pd(z, act);
          zhit[h] = _mm256_or_pd(zhit[h], zh);
          live[h] = _mm256_andnot_pd(zh, live[h]);
          s[h] = _mm256_blendv_pd(s[h], sn, upd);
          c[h] = _mm256_blendv_pd(c[h], cn, upd);
          p[h] = _mm256_blendv_pd(p[h], pn, upd);
          g[h] = _mm256_blendv_pd(g[h], _mm256_fmsub_pd(cn, rn, b), upd);
        }
      }
      double lv[L], zv[L], pv[L], gv[L];
      for (int h = 0; h < H; h++) {
        _mm256_storeu_pd(lv + 4 * h, live[h]);
        _mm256_storeu_pd(zv + 4 * h, zhit[h]);
        _mm256_storeu_pd(pv + 4 * h, p[h]);
        _mm256_storeu_pd(gv + 4 * h, g[h]);
      }
      for (int q = 0; q < L; q++) {
        int is_live = lv[q] != 0.0, hit = zv[q] != 0.0; /* masks are all-ones bit patterns: NaN, != 0 */
        if (is_live) {
          d[l * L + q] -= pv[q];
          e[l * L + q] = gv[q];
        }
        if (is_live || hit) e[m[q] * L + q] = 0.0;
      }
    }
  }
  return 0;
}

static void sort_values(double *w, int n) {
  for (int i = 1; i < n; i++) {
    double x = w[i];
    int j = i - 1;
    while (j >= 0 && w[j] > x) {
      w[j + 1] = w[j];
      j--;
    }
    w[j + 1] = x;
  }
}

/* eigenvalues (ascending) of count n x n symmetric matrices at a (row-major, one after another) into w;
 * 0, 1 (no convergence), -1 (memory) */
static int simd_eigvalsh(const double *a, int64_t count, int n, double *w) {
  if (n > NMAX) return 2;
  double *A = malloc(sizeof(double) * n * n * L);
  if (A == NULL) return -1;
  double d[NMAX * L], e[NMAX * L];
  int status = 0;
  for (int64_t b0 = 0; b0 < count && status == 0; b0 += L) {
    const double *mats[L];
    double scale[L], unscale[L]; /* each matrix brought to max-abs 1 (as LAPACK scales): no under- or overflow */
    for (int q = 0; q < L; q++) {
      mats[q] = b0 + q < count ? a + (b0 + q) * n * n : NULL;
      double amax = 0.0;
      int finite = 1;
      for (int i = 0; mats[q] != NULL && i < n * n; i++) {
        double x = fabs(mats[q][i]);
        finite &= x <= 1e290; /* false for NaN and Inf */
        amax = x > amax ? x : amax;
      }
      if (!finite || (amax > 0.0 && amax < 1e-290)) status = 2; /* NaN, Inf or extreme scales: LAPACK's */
      scale[q] = amax > 0.0 ? 1.0 / amax : 1.0;
      unscale[q] = amax > 0.0 ? amax : 1.0;
    }
    if (status) break;
    tridiag(mats, scale, n, A, d, e);
    status = ql(d, e, n);
    for (int q = 0; q < L && b0 + q < count; q++) {
      for (int i = 0; i < n; i++) w[(b0 + q) * n + i] = d[i * L + q] * unscale[q];
      sort_values(w + (b0 + q) * n, n);
    }
  }
  free(A);
  return status;
}
#endif

/* LAPACK's dsyevd (Fortran calling convention; the two trailing lengths are the hidden string lengths) */
typedef void (*syevd_fn)(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                         double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t, size_t);

/* eigenvalues (ascending) of each bucket's count x (s x s) matrices at dens + start, written one bucket after
 * another into values (the layout of torch.cat([eigvalsh(block).flatten() for each bucket])).
 * method: 0 the batched solver where the CPU has AVX2 and FMA (LAPACK for a bucket it does not converge on,
 * or too large), else LAPACK; 1 LAPACK only; 2 the batched solver only. syevd may be NULL (no LAPACK).
 * Returns 0; -3 when a bucket found no solver (the caller uses torch); -1 out of memory; else LAPACK's info. */
static int eigvalsh_buckets(syevd_fn syevd, int method, const double *dens, int64_t buckets, const int64_t *sizes,
                            const int64_t *counts, const int64_t *starts, double *values) {
  int simd = 0;
#if HAVE_SIMD_EIG
  simd = method != 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  int64_t smax = 1;
  for (int64_t b = 0; b < buckets; b++) smax = sizes[b] > smax ? sizes[b] : smax;
  int lwork = (int)(2 * smax + 1), liwork = 1, status = 0;
  double *a = malloc(sizeof(double) * (smax * smax + lwork));
  if (a == NULL) return -1;
  double *work = a + smax * smax;
  int64_t out = 0;
  for (int64_t b = 0; b < buckets && status == 0; b++) {
    int n = (int)sizes[b], done = 0;
#if HAVE_SIMD_EIG
    if (simd && n <= NMAX) {
      int s = simd_eigvalsh(dens + starts[b], counts[b], n, values + out);
      if (s == -1) status = -1;
      done = s == 0;
    }
#endif
    if (!done && status == 0 && (syevd == NULL || method == 2)) status = -3;
    for (int64_t q = 0; q < counts[b] && !done && status == 0; q++) {
      memcpy(a, dens + starts[b] + q * n * n, sizeof(double) * n * n);
      int iwork, info = 0;
      syevd("N", "L", &n, a, &n, values + out + q * n, work, &lwork, &iwork, &liwork, &info, 1, 1);
      status = info;
    }
    out += n * counts[b];
  }
  free(a);
  return status;
}

/* the von Neumann entropy (natural log) of each bond's spectrum values[start[b] .. start[b] + size[b]),
 * normalised by its sum (negative round-off clamped to zero: S = ln T - sum v ln v / T; NaN for a zero or
 * non-finite spectrum, as artent_fast.backends.torch_ops.entropy), then the profiles: out[i * width + j]
 * is the entropy of bond slots[i * width + j] (slot n_bonds: NaN), all NaN for a zero unit */
static void entropies(const double *values, int64_t n_bonds, const int64_t *start, const int64_t *size,
                      double *bond, int64_t k, int64_t width, const int64_t *slots, const uint8_t *zero,
                      double *out) {
  for (int64_t b = 0; b < n_bonds; b++) {
    double total = 0.0, vlogv = 0.0;
    for (int64_t t = 0; t < size[b]; t++) {
      double v = values[start[b] + t];
      v = v > 0.0 ? v : (v == v ? 0.0 : v); /* clamp, keep NaN */
      total += v;
      vlogv += v > 0.0 ? v * log(v) : (v == v ? 0.0 : v);
    }
    bond[b] = total > 0.0 && isfinite(total) ? log(total) - vlogv / total : NAN;
  }
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < width; j++) {
      int64_t slot = slots[i * width + j];
      out[i * width + j] = zero[i] || slot >= n_bonds ? NAN : bond[slot];
    }
}

#define PTR(x) ((void *)(uintptr_t)(x))

/* the snapshot: k units' factors (B_i: m_i x r, A_i: r x n_i, any strides) copied zero padded into B (k, m_max,
 * r) and A (k, r, n_max), both contiguous. dtype: 0 float32, 1 float64 (copied as they are), 2 bfloat16 (widened
 * to float32, exactly). desc holds per unit [B address, m_i, B row stride, B column stride, A address, n_i,
 * A row stride, A column stride] (strides in elements) */
static inline float bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* entry i of a float32 (dtype 0), float64 (1) or bfloat16 (2) array, as a double */
static inline double read_at(const void *p, int dtype, int64_t i) {
  if (dtype == 1) return ((const double *)p)[i];
  return dtype == 2 ? bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static void pack(int64_t k, int64_t m_max, int64_t r, int64_t n_max, int dtype, const int64_t *desc, void *B,
                 void *A) {
  int wide = dtype == 1; /* the outputs: float64 for float64 inputs, else float32 */
  int64_t osize = wide ? 8 : 4;
  memset(B, 0, osize * k * m_max * r);
  memset(A, 0, osize * k * r * n_max);
  for (int64_t u = 0; u < k; u++) {
    const int64_t *d = desc + 8 * u;
    const void *b = PTR(d[0]), *a = PTR(d[4]);
    int64_t m = d[1], bs0 = d[2], bs1 = d[3], n = d[5], as0 = d[6], as1 = d[7];
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < r; j++) {
        double x = read_at(b, dtype, i * bs0 + j * bs1);
        int64_t at = (u * m_max + i) * r + j;
        if (wide) ((double *)B)[at] = x;
        else ((float *)B)[at] = (float)x;
      }
    for (int64_t i = 0; i < r; i++)
      for (int64_t j = 0; j < n; j++) {
        double x = read_at(a, dtype, i * as0 + j * as1);
        int64_t at = (u * r + i) * n_max + j;
        if (wide) ((double *)A)[at] = x;
        else ((float *)A)[at] = (float)x;
      }
  }
}

static PyObject *py_pack(PyObject *self, PyObject *args) {
  unsigned long long desc, B, A;
  long long k, m_max, r, n_max;
  int dtype;
  if (!PyArg_ParseTuple(args, "LLLLiKKK", &k, &m_max, &r, &n_max, &dtype, &desc, &B, &A)) return NULL;
  Py_BEGIN_ALLOW_THREADS
  pack(k, m_max, r, n_max, dtype, PTR(desc), PTR(B), PTR(A));
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

static PyObject *py_entropies(PyObject *self, PyObject *args) {
  unsigned long long values, start, size, bond, slots, zero, out;
  long long n_bonds, k, width;
  if (!PyArg_ParseTuple(args, "KLKKKLLKKK", &values, &n_bonds, &start, &size, &bond, &k, &width, &slots, &zero,
                        &out))
    return NULL;
  Py_BEGIN_ALLOW_THREADS
  entropies(PTR(values), n_bonds, PTR(start), PTR(size), PTR(bond), k, width, PTR(slots), PTR(zero), PTR(out));
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

static PyObject *py_eigvalsh_buckets(PyObject *self, PyObject *args) {
  unsigned long long syevd, dens, sizes, counts, starts, values;
  long long buckets;
  int method;
  if (!PyArg_ParseTuple(args, "KiKLKKKK", &syevd, &method, &dens, &buckets, &sizes, &counts, &starts, &values))
    return NULL;
  int status;
  Py_BEGIN_ALLOW_THREADS
  status = eigvalsh_buckets((syevd_fn)PTR(syevd), method, PTR(dens), buckets, PTR(sizes), PTR(counts), PTR(starts),
                            PTR(values));
  Py_END_ALLOW_THREADS
  if (status == -1) return PyErr_NoMemory();
  return PyLong_FromLong(status);
}

static PyObject *py_densities(PyObject *self, PyObject *args) {
  unsigned long long B, A, red, zero, g_count, g_rows, g_cols, g_index, full, terms, segments, order, dens;
  int is_double;
  long long k, m_max, r, n_max, groups, n_grams, n_terms, n_traced, n_dens;
  if (!PyArg_ParseTuple(args, "KKiLLLLKKLKKKKKLLKKLLKK", &B, &A, &is_double, &k, &m_max, &r, &n_max, &red, &zero,
                        &groups, &g_count, &g_rows, &g_cols, &g_index, &full, &n_grams, &n_terms, &terms,
                        &segments, &n_traced, &n_dens, &order, &dens))
    return NULL;
  if (r < 1 || r > RMAX) {
    PyErr_Format(PyExc_ValueError, "rank %lld outside 1..%d", r, RMAX);
    return NULL;
  }
  int status;
  Py_BEGIN_ALLOW_THREADS
  status = densities(PTR(B), PTR(A), is_double, k, m_max, r, n_max, PTR(red), PTR(zero), groups, PTR(g_count),
                     PTR(g_rows), PTR(g_cols), PTR(g_index), PTR(full), n_grams, n_terms, PTR(terms), PTR(segments),
                     n_traced, n_dens, PTR(order), PTR(dens));
  Py_END_ALLOW_THREADS
  if (status == -1) return PyErr_NoMemory();
  if (status == -2) {
    PyErr_SetString(PyExc_RuntimeError, "the plan's Gram sizes do not add up");
    return NULL;
  }
  return PyLong_FromLong(status);
}

static PyMethodDef methods[] = {
    {"densities", py_densities, METH_VARARGS,
     "densities(...) -> 0, or 1 when a Gram is singular (see artent_fast/native.py; pointers as ints)"},
    {"eigvalsh_buckets", py_eigvalsh_buckets, METH_VARARGS,
     "eigvalsh_buckets(syevd, method, dens, buckets, sizes, counts, starts, values) -> 0, -3 or LAPACK info"},
    {"entropies", py_entropies, METH_VARARGS,
     "entropies(values, n_bonds, start, size, bond, k, width, slots, zero, out) (pointers as ints)"},
    {"pack", py_pack, METH_VARARGS,
     "pack(k, m_max, r, n_max, dtype, desc, B, A) (dtype 0 f32, 1 f64, 2 bf16; pointers as ints)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_densities", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_densities(void) {
#if HAVE_SIMD_EIG && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init(); /* before the first __builtin_cpu_supports */
#endif
  PyObject *m = PyModule_Create(&module);
  if (m != NULL) PyModule_AddIntConstant(m, "RMAX", RMAX);
  return m;
}
