// libtorch entry points that tch 0.24 does not wrap: fused SGD, fused
// multi-tensor lerp (the momentum update), autocast for a chosen device and
// dtype, and channels-last layouts. Every function catches C++ exceptions
// and returns them as a malloc'ed message (NULL on success), which the Rust
// side (torch_ext.rs) turns into an error and frees.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

typedef at::Tensor *tensor;

namespace {
char *error_copy(const char *what) {
  size_t n = std::strlen(what) + 1;
  char *out = static_cast<char *>(std::malloc(n));
  if (out != nullptr) std::memcpy(out, what, n);
  return out;
}

std::vector<at::Tensor> list(tensor *ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

#define GUARDED(body)                        \
  try {                                      \
    body;                                    \
    return nullptr;                          \
  } catch (const std::exception &e) {        \
    return error_copy(e.what());             \
  } catch (...) {                            \
    return error_copy("unknown C++ error");  \
  }

extern "C" {

void geossl_free_error(char *e) { std::free(e); }

// PyTorch's SGD (no dampening, no Nesterov) over all parameters in one
// fused kernel per device: buf = momentum * buf + (grad + wd * p), or
// buf = grad + wd * p on the first step; p -= lr * buf. When found_inf is
// given and holds a non-zero value the kernel changes nothing, decided on
// the device without a host sync (PyTorch's GradScaler mechanism).
char *geossl_fused_sgd(tensor *params, tensor *grads, tensor *bufs, int n, double weight_decay,
                       double momentum, double lr, int first_step, tensor found_inf) {
  GUARDED({
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    at::_fused_sgd_(list(params, n), list(grads, n), list(bufs, n), weight_decay, momentum, lr,
                    0.0, false, false, first_step != 0, std::nullopt, inf);
  })
}

// self[i] += weight * (end[i] - self[i]) for every i, in one multi-tensor op.
char *geossl_foreach_lerp(tensor *self, tensor *end, int n, double weight) {
  GUARDED(at::_foreach_lerp_(list(self, n), list(end, n), at::Scalar(weight)))
}

// dst[i].copy_(src[i]) for every i, in one multi-tensor op.
char *geossl_foreach_copy(tensor *dst, tensor *src, int n) {
  GUARDED(at::_foreach_copy_(list(dst, n), list(src, n)))
}

// Enters a bf16 autocast region for the CPU (cuda = 0) or CUDA; *previous
// receives the state to hand back to geossl_autocast_exit.
char *geossl_autocast_enter(int cuda, int *previous) {
  GUARDED({
    auto dt = device_type(cuda);
    *previous = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    at::autocast::set_autocast_dtype(dt, at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::increment_nesting();
  })
}

char *geossl_autocast_exit(int cuda, int previous) {
  GUARDED({
    at::autocast::set_autocast_enabled(device_type(cuda), previous != 0);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  })
}

// A copy of t in channels-last (NHWC strides) layout, or the contiguous
// (NCHW) one; t itself when it already has it.
char *geossl_contiguous(tensor t, int channels_last, tensor *out) {
  GUARDED({
    auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    *out = new at::Tensor(t->contiguous(fmt));
  })
}

// An uninitialised float tensor in page-locked host memory, from which
// copies to a GPU can run asynchronously.
char *geossl_empty_pinned(const int64_t *sizes, int ndim, tensor *out) {
  GUARDED({
    auto options = at::TensorOptions().dtype(at::kFloat).pinned_memory(true);
    *out = new at::Tensor(at::empty(at::IntArrayRef(sizes, ndim), options));
  })
}

// Whether t is laid out channels-last.
char *geossl_is_channels_last(tensor t, int *out) {
  GUARDED(*out = t->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0)
}
}
