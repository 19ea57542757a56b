/* Bond densities of many factored updates B @ A in one call, on the CPU, without the GIL.
 *
 * The compiled twin of the torch code in artent_fast/core/lowrank_mixed.py (lowrank_profiles, up to
 * the eigensolves) and artent_fast/core/bondplan.py (BondPlan.densities_of, CPU branch). It follows
 * the same plan, index for index, so the two agree to rounding:
 *
 *   1. each unit's factors in float64, divided by their max-abs entry (a unit with a NaN or Inf entry
 *      is zeroed: it measures as NaN);
 *   2. the reduced factors B~ = B L_A and A~ = L_B^T A, L the Cholesky factors of A A^T and B^T B
 *      (a zero factor gives a zero unit; a singular non-zero Gram returns 1: the caller then takes
 *      the torch path, whose square root handles it);
 *   3. per root group of the plan, each member's Gram factor Y gathered from [B~, A~] by the plan's
 *      index, and Y Y^T written in group order;
 *   4. the traced entries (gather of the plan's terms, added into their segments), then every
 *      density entry gathered from [grams, 0, traced] in bucket order.
 *
 * The caller (artent_fast/native.py) allocates every buffer; nothing here allocates more than one
 * scratch matrix. Built by setup.py as artent_fast._cpu_densities when a C compiler is present;
 * without it everything runs through torch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* one unit's B (m x r) and A (r x n), padded to m_max, n_max: reduced factors into bred, ared.
 * Returns 0 (done), 2 (a zero unit: zeros written) or 1 (a singular non-zero Gram). */
static inline __attribute__((always_inline)) int reduce_unit(const void *bp, const void *ap, int is_double, int64_t m, int64_t r, int64_t n,
                       double *bred, double *ared, double *b64, double *a64) {
  int64_t nb = m * r, na = r * n;
  double bmax = 0.0, amax = 0.0;
  int finite = 1;
  for (int64_t t = 0; t < nb; t++) {
    double x = is_double ? ((const double *)bp)[t] : (double)((const float *)bp)[t];
    finite &= isfinite(x) != 0;
    b64[t] = x;
    double ax = fabs(x);
    bmax = ax > bmax ? ax : bmax;
  }
  for (int64_t t = 0; t < na; t++) {
    double x = is_double ? ((const double *)ap)[t] : (double)((const float *)ap)[t];
    finite &= isfinite(x) != 0;
    a64[t] = x;
    double ax = fabs(x);
    amax = ax > amax ? ax : amax;
  }
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

/* compiled twice: for x86-64 CPUs with AVX2 and FMA, and for any (chosen when the module loads) */
#if defined(__x86_64__) && defined(__GNUC__)
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

/* LAPACK's dsyevd (Fortran calling convention; the two trailing lengths are the hidden string lengths) */
typedef void (*syevd_fn)(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                         double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t, size_t);

/* eigenvalues (ascending) of each bucket's count x (s x s) matrices at dens + start, written one bucket after
 * another into values (the layout of torch.cat([eigvalsh(block).flatten() for each bucket]));
 * 0, or the first LAPACK info that is not 0 */
static int eigvalsh_buckets(syevd_fn syevd, const double *dens, int64_t buckets, const int64_t *sizes,
                            const int64_t *counts, const int64_t *starts, double *values) {
  int64_t smax = 1;
  for (int64_t b = 0; b < buckets; b++) smax = sizes[b] > smax ? sizes[b] : smax;
  int lwork = (int)(2 * smax + 1), liwork = 1, status = 0;
  double *a = malloc(sizeof(double) * (smax * smax + lwork));
  if (a == NULL) return -1;
  double *work = a + smax * smax;
  int64_t out = 0;
  for (int64_t b = 0; b < buckets && status == 0; b++) {
    int n = (int)sizes[b];
    for (int64_t q = 0; q < counts[b] && status == 0; q++) {
      memcpy(a, dens + starts[b] + q * n * n, sizeof(double) * n * n);
      int iwork, info = 0;
      syevd("N", "L", &n, a, &n, values + out, work, &lwork, &iwork, &liwork, &info, 1, 1);
      status = info;
      out += n;
    }
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

/* the snapshot: k units' factors (B_i: m_i x r, A_i: r x n_i, any strides, float32 or float64 as the outputs)
 * copied zero padded into B (k, m_max, r) and A (k, r, n_max), both contiguous; desc holds per unit
 * [B address, m_i, B row stride, B column stride, A address, n_i, A row stride, A column stride] (strides in
 * elements) */
static void pack(int64_t k, int64_t m_max, int64_t r, int64_t n_max, int is_double, const int64_t *desc, void *B,
                 void *A) {
  int64_t esize = is_double ? 8 : 4;
  memset(B, 0, esize * k * m_max * r);
  memset(A, 0, esize * k * r * n_max);
  for (int64_t u = 0; u < k; u++) {
    const int64_t *d = desc + 8 * u;
    int64_t m = d[1], bs0 = d[2], bs1 = d[3], n = d[5], as0 = d[6], as1 = d[7];
    if (is_double) {
      const double *b = PTR(d[0]), *a = PTR(d[4]);
      double *bo = (double *)B + u * m_max * r, *ao = (double *)A + u * r * n_max;
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < r; j++) bo[i * r + j] = b[i * bs0 + j * bs1];
      for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < n; j++) ao[i * n_max + j] = a[i * as0 + j * as1];
    } else {
      const float *b = PTR(d[0]), *a = PTR(d[4]);
      float *bo = (float *)B + u * m_max * r, *ao = (float *)A + u * r * n_max;
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < r; j++) bo[i * r + j] = b[i * bs0 + j * bs1];
      for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < n; j++) ao[i * n_max + j] = a[i * as0 + j * as1];
    }
  }
}

static PyObject *py_pack(PyObject *self, PyObject *args) {
  unsigned long long desc, B, A;
  long long k, m_max, r, n_max;
  int is_double;
  if (!PyArg_ParseTuple(args, "LLLLiKKK", &k, &m_max, &r, &n_max, &is_double, &desc, &B, &A)) return NULL;
  Py_BEGIN_ALLOW_THREADS pack(k, m_max, r, n_max, is_double, PTR(desc), PTR(B), PTR(A));
  Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_entropies(PyObject *self, PyObject *args) {
  unsigned long long values, start, size, bond, slots, zero, out;
  long long n_bonds, k, width;
  if (!PyArg_ParseTuple(args, "KLKKKLLKKK", &values, &n_bonds, &start, &size, &bond, &k, &width, &slots, &zero,
                        &out))
    return NULL;
  Py_BEGIN_ALLOW_THREADS entropies(PTR(values), n_bonds, PTR(start), PTR(size), PTR(bond), k, width, PTR(slots),
                                   PTR(zero), PTR(out));
  Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_eigvalsh_buckets(PyObject *self, PyObject *args) {
  unsigned long long syevd, dens, sizes, counts, starts, values;
  long long buckets;
  if (!PyArg_ParseTuple(args, "KKLKKKK", &syevd, &dens, &buckets, &sizes, &counts, &starts, &values)) return NULL;
  int status;
  Py_BEGIN_ALLOW_THREADS status = eigvalsh_buckets((syevd_fn)PTR(syevd), PTR(dens), buckets, PTR(sizes),
                                                   PTR(counts), PTR(starts), PTR(values));
  Py_END_ALLOW_THREADS if (status == -1) return PyErr_NoMemory();
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
  Py_BEGIN_ALLOW_THREADS status =
      densities(PTR(B), PTR(A), is_double, k, m_max, r, n_max, PTR(red), PTR(zero), groups, PTR(g_count),
                PTR(g_rows), PTR(g_cols), PTR(g_index), PTR(full), n_grams, n_terms, PTR(terms), PTR(segments),
                n_traced, n_dens, PTR(order), PTR(dens));
  Py_END_ALLOW_THREADS if (status == -1) return PyErr_NoMemory();
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
     "eigvalsh_buckets(syevd, dens, buckets, sizes, counts, starts, values) -> LAPACK info (pointers as ints)"},
    {"entropies", py_entropies, METH_VARARGS,
     "entropies(values, n_bonds, start, size, bond, k, width, slots, zero, out) (pointers as ints)"},
    {"pack", py_pack, METH_VARARGS, "pack(k, m_max, r, n_max, is_double, desc, B, A) (pointers as ints)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_densities", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu_densities(void) {
  PyObject *m = PyModule_Create(&module);
  if (m != NULL) PyModule_AddIntConstant(m, "RMAX", RMAX);
  return m;
}
