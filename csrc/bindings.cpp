// pybind11 bindings for the batched Jacobi eigensolver (jacobi_eigvalsh.cu).
//
// Pointers and the stream are plain integers (tensor.data_ptr(), torch.cuda.current_stream().cuda_stream),
// so the module needs neither libtorch nor a GPU to import: CUDA is first touched by a call.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

extern "C" int artent_jacobi_eigvalsh(void* a, void* w, long long batch, int n, int is_double, int max_sweeps,
                                      double tol, void* stream, int force_global);
extern "C" const char* artent_cuda_error_string(int code);

namespace py = pybind11;

namespace {

constexpr int kMaxN = 512;

void eigvalsh_batched(std::uintptr_t a, std::uintptr_t w, long long batch, int n, const std::string& dtype,
                      std::uintptr_t stream, int max_sweeps, double tol, bool force_global) {
  if (dtype != "float32" && dtype != "float64") {
    throw std::invalid_argument("eigvalsh_batched: dtype must be 'float32' or 'float64', got '" + dtype + "'");
  }
  if (n < 1 || n > kMaxN) {
    throw std::invalid_argument("eigvalsh_batched: n must be in 1.." + std::to_string(kMaxN) + ", got " +
                                std::to_string(n));
  }
  if (batch < 0) throw std::invalid_argument("eigvalsh_batched: batch must be >= 0");
  if (max_sweeps < 1) throw std::invalid_argument("eigvalsh_batched: max_sweeps must be >= 1");
  if (batch > 0 && (a == 0 || w == 0)) throw std::invalid_argument("eigvalsh_batched: null device pointer");
  int code = 0;
  {
    py::gil_scoped_release release;
    code = artent_jacobi_eigvalsh(reinterpret_cast<void*>(a), reinterpret_cast<void*>(w), batch, n,
                                  dtype == "float64", max_sweeps, tol, reinterpret_cast<void*>(stream),
                                  force_global ? 1 : 0);
  }
  if (code != 0) throw std::runtime_error(std::string("eigvalsh_batched: CUDA error: ") + artent_cuda_error_string(code));
}

}  // namespace

PYBIND11_MODULE(_cuda_jacobi, m) {
  m.doc() = "Batched symmetric eigenvalues (values only) by parallel cyclic Jacobi on raw CUDA pointers.";
  m.attr("MAX_N") = kMaxN;
  m.attr("ABI_VERSION") = 1;
  m.def("eigvalsh_batched", &eigvalsh_batched, py::arg("a"), py::arg("w"), py::arg("batch"), py::arg("n"),
        py::arg("dtype"), py::arg("stream") = 0, py::arg("max_sweeps") = 20, py::arg("tol") = 0.0,
        py::arg("force_global") = false,
        "Eigenvalues, ascending, of `batch` contiguous n x n symmetric matrices at device pointer `a`\n"
        "(overwritten: pass a scratch copy) into `w` (batch x n), enqueued on `stream`; asynchronous.\n"
        "tol <= 0 uses the dtype's machine epsilon as the relative off-diagonal threshold.");
}
