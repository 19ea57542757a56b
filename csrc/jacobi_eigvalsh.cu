// Batched symmetric eigenvalues (values only) by parallel cyclic Jacobi, one thread block per matrix.
//
// Why: torch.linalg.eigvalsh batches on the GPU only up to n = 32 and loops over the batch above that,
// and it synchronises with the host. Here each block diagonalises one n x n matrix (n <= 512) with
// the round-robin ("tournament") ordering: every round applies n/2 disjoint rotations at once. For
// disjoint pairs the two-sided update A <- J^T A J splits into independent 2x2 blocks
// A[{p1,q1},{p2,q2}] <- R1^T B R2, so a round is one pass over the matrix with no read/write
// hazards. The matrix lives in shared memory when it fits, else in the caller's global buffer
// (which this kernel overwrites). Eigenvalues are written sorted ascending, like eigvalsh.
//
// The module takes raw device pointers and a stream: it never links against libtorch.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace {

template <typename T>
struct Eps;
template <>
struct Eps<float> {
  static constexpr float value = 1.1920929e-07f;
};
template <>
struct Eps<double> {
  static constexpr double value = 2.220446049250313e-16;
};

// Position -> index in round `r` of the round-robin schedule over `m` (even) players:
// player 0 stays, the others rotate.
__device__ __forceinline__ int player(int pos, int r, int m) { return pos == 0 ? 0 : 1 + (pos - 1 + r) % (m - 1); }

template <typename T>
__device__ __forceinline__ bool sorts_before(T x, int i, T y, int j) {
  // NaN sorts last; ties break by index so every rank is unique.
  const bool xn = isnan(x), yn = isnan(y);
  if (xn != yn) return yn;
  if (xn || x == y) return i < j;
  return x < y;
}

// Bytes of shared memory before the matrix: c, s, t (npairs each) and the reduction scratch (2 per
// thread) in T, then p and q (npairs each) in int, rounded up so that the matrix after them is
// aligned for T. One function for the kernel's layout and the host's allocation.
template <typename T>
__host__ __device__ __forceinline__ size_t matrix_offset(int npairs, int threads) {
  const size_t bytes = (3 * static_cast<size_t>(npairs) + 2 * static_cast<size_t>(threads)) * sizeof(T) +
                       2 * static_cast<size_t>(npairs) * sizeof(int);
  return (bytes + sizeof(T) - 1) / sizeof(T) * sizeof(T);
}

template <typename T>
__global__ void jacobi_eigvalsh_kernel(T* a_all, T* __restrict__ w_all, int n, int max_sweeps, T tol,
                                       bool use_shared) {
  extern __shared__ unsigned char smem_raw[];
  const int m = n + (n & 1);  // players, a dummy index n pads odd sizes
  const int npairs = m / 2;
  T* cs = reinterpret_cast<T*>(smem_raw);  // c[npairs], s[npairs], t[npairs] (t = s / c)
  T* sn = cs + npairs;
  T* tn = sn + npairs;
  T* red = tn + npairs;                              // blockDim.x reduction scratch (2 values each)
  int* pp = reinterpret_cast<int*>(red + 2 * blockDim.x);  // p[npairs], q[npairs]
  int* qq = pp + npairs;
  T* a = a_all + static_cast<int64_t>(blockIdx.x) * n * n;
  T* w = w_all + static_cast<int64_t>(blockIdx.x) * n;
  if (use_shared) {
    // The matrix starts at the first sizeof(T)-aligned byte after the index arrays. (It used to skip
    // one more int when npairs was odd, which put a double matrix 4 bytes off: misaligned address.)
    T* sa = reinterpret_cast<T*>(smem_raw + matrix_offset<T>(npairs, blockDim.x));
    for (int i = threadIdx.x; i < n * n; i += blockDim.x) sa[i] = a[i];
    a = sa;
  }
  __syncthreads();

  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    // Convergence test: off-diagonal mass against the diagonal mass.
    T off = 0, dia = 0;
    for (int i = threadIdx.x; i < n * n; i += blockDim.x) {
      const T v = a[i];
      if (i / n == i % n) dia += v * v; else off += v * v;
    }
    red[threadIdx.x] = off;
    red[blockDim.x + threadIdx.x] = dia;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) {
        red[threadIdx.x] += red[threadIdx.x + s];
        red[blockDim.x + threadIdx.x] += red[blockDim.x + threadIdx.x + s];
      }
      __syncthreads();
    }
    const bool done = red[0] <= tol * tol * red[blockDim.x];  // NaN input never converges: runs out
    __syncthreads();
    if (done) break;

    for (int r = 0; r < m - 1; ++r) {
      for (int k = threadIdx.x; k < npairs; k += blockDim.x) {
        int p = player(k, r, m), q = player(m - 1 - k, r, m);
        if (p > q) { const int t = p; p = q; q = t; }
        T c = 1, s = 0, t = 0;
        if (q < n) {
          const T apq = a[p * n + q], app = a[p * n + p], aqq = a[q * n + q];
          // Negligible pairs (Demmel-Veselic) are not rotated: the block update zeroes their entry. This
          // keeps clusters of equal eigenvalues from being stirred by 45-degree rotations of round-off.
          if (fabs(apq) > tol * sqrt(fabs(app)) * sqrt(fabs(aqq))) {
            const T tau = (aqq - app) / (2 * apq);
            t = copysign(T(1), tau) / (fabs(tau) + sqrt(T(1) + tau * tau));  // tau = inf gives t = 0
            c = T(1) / sqrt(T(1) + t * t);
            s = t * c;
          }
        }
        pp[k] = p; qq[k] = q; cs[k] = c; sn[k] = s; tn[k] = t;
      }
      __syncthreads();
      for (int idx = threadIdx.x; idx < npairs * npairs; idx += blockDim.x) {
        const int k1 = idx / npairs, k2 = idx % npairs;
        const int p1 = pp[k1], q1 = qq[k1], p2 = pp[k2], q2 = qq[k2];
        const T c1 = cs[k1], s1 = sn[k1], c2 = cs[k2], s2 = sn[k2];
        const bool q1ok = q1 < n, q2ok = q2 < n;  // a pair with the dummy index is a single index
        const T b00 = a[p1 * n + p2];
        const T b01 = q2ok ? a[p1 * n + q2] : T(0);
        const T b10 = q1ok ? a[q1 * n + p2] : T(0);
        const T b11 = (q1ok && q2ok) ? a[q1 * n + q2] : T(0);
        const T m00 = c1 * b00 - s1 * b10, m01 = c1 * b01 - s1 * b11;  // M = R1^T B
        const T m10 = s1 * b00 + c1 * b10, m11 = s1 * b01 + c1 * b11;
        T n00 = c2 * m00 - s2 * m01, n01 = s2 * m00 + c2 * m01;  // M R2
        T n10 = c2 * m10 - s2 * m11, n11 = s2 * m10 + c2 * m11;
        if (k1 == k2) {  // the annihilated pair: exact zeros, and the accurate diagonal update (Golub-Van Loan 8.5)
          n00 = b00 - tn[k1] * b01;
          n11 = b11 + tn[k1] * b01;
          n01 = T(0);
          n10 = T(0);
        }
        a[p1 * n + p2] = n00;
        if (q2ok) a[p1 * n + q2] = n01;
        if (q1ok) a[q1 * n + p2] = n10;
        if (q1ok && q2ok) a[q1 * n + q2] = n11;
      }
      __syncthreads();
    }
  }

  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const T di = a[i * n + i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += sorts_before(a[j * n + j], j, di, i);
    w[rank] = di;
  }
}

template <typename T>
size_t small_bytes(int n, int threads) {
  return matrix_offset<T>((n + (n & 1)) / 2, threads);
}

template <typename T>
int launch(void* a, void* w, long long batch, int n, int max_sweeps, double tol, cudaStream_t stream,
           int force_global) {
  if (batch == 0 || n == 0) return cudaSuccess;
  const int npairs = (n + (n & 1)) / 2;
  const int threads = npairs * npairs >= 4096 ? 512 : (npairs * npairs >= 1024 ? 256 : 128);
  int device = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  const size_t base = small_bytes<T>(n, threads);
  const size_t full = base + static_cast<size_t>(n) * n * sizeof(T);
  const bool use_shared = !force_global && full <= static_cast<size_t>(optin);
  const size_t bytes = use_shared ? full : base;
  if (bytes > 48 * 1024) {
    err = cudaFuncSetAttribute(jacobi_eigvalsh_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const T eps = tol > 0 ? static_cast<T>(tol) : Eps<T>::value;
  jacobi_eigvalsh_kernel<T><<<static_cast<unsigned>(batch), threads, bytes, stream>>>(
      static_cast<T*>(a), static_cast<T*>(w), n, max_sweeps, eps, use_shared);
  return cudaGetLastError();
}

}  // namespace

extern "C" int artent_jacobi_eigvalsh(void* a, void* w, long long batch, int n, int is_double, int max_sweeps,
                                      double tol, void* stream, int force_global) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return is_double ? launch<double>(a, w, batch, n, max_sweeps, tol, s, force_global)
                   : launch<float>(a, w, batch, n, max_sweeps, tol, s, force_global);
}

extern "C" const char* artent_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
