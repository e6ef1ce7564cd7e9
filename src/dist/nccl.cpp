// geossl's NCCL backend: PyTorch's c10d::ProcessGroupNCCL, built as its own
// shared library (libgeossl_nccl.so, by build.rs) and loaded at run time by
// src/dist/nccl.rs. It is separate because calling ProcessGroupNCCL makes
// libtorch_cuda.so a hard link dependency, and the geossl binary loads CUDA
// deliberately at run time instead (src/model/torch_ext.rs, load_cuda), so
// that it starts on machines without CUDA.
//
// The group comes back as a GeosslGroup (c10d.h), which the main shim's
// collectives (src/dist/c10d.cpp) drive through c10d::Backend's virtual
// methods exactly as they drive ProcessGroupGloo.
//
// Every function returning char* returns NULL on success or a malloc'ed,
// NUL-terminated message the caller frees with free() (geossl_free_error).

#include "c10d.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/headeronly/version.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

// What nccl.rs checks before calling anything else: the torch headers this
// library was compiled against and the version of the interface below. A
// library from another build (another torch, an older geossl) is refused
// with both strings instead of crashing on a changed struct layout.
#define GEOSSL_NCCL_INTERFACE "1"

extern "C" {

// "torch <version>, interface <n>": see GEOSSL_NCCL_INTERFACE.
const char *geossl_nccl_built_for() { return "torch " TORCH_VERSION ", interface " GEOSSL_NCCL_INTERFACE; }

// A ProcessGroupNCCL of `size` ranks over `store`, this process being `rank`
// and using the CUDA device `device_index`, as torch.distributed's
// init_process_group("nccl", timeout=..., device_id=cuda:device_index) makes
// it: the device made current (torch.cuda.set_device), the backend's keys
// under a "cuda/" prefix of the store, the timeout in its Options (NCCL's
// watchdog aborts a collective that exceeds it, which is how a dead peer
// ends the job instead of hanging it), the device bound to the group, and
// the communicator created now (eager_connect_single_device) so that a
// rendezvous failure shows up here rather than at the first collective.
char *geossl_nccl_group_new(GeosslStore *store, int rank, int size, int device_index,
                            int64_t timeout_ms, GeosslGroup **out) {
  GEOSSL_GUARDED({
    int devices = static_cast<int>(c10::cuda::device_count());
    TORCH_CHECK(device_index >= 0 && device_index < devices, "NCCL needs the CUDA device cuda:",
                device_index, " but this process sees ", devices, " CUDA device(s)",
                devices == 0 ? " (no GPU, or no working driver)" : "");
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    // The names torch gives the world group (its log lines and flight
    // recorder dumps carry them).
    options->group_name = "0";
    options->group_desc = "default_pg";
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("cuda/", store->store);
    auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, options);
    at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
    backend->setBoundDeviceId(device);
    if (backend->supportsSplitting()) backend->eagerConnectSingleDevice(device);
    *out = new GeosslGroup{backend, rank, size};
  })
}
}
