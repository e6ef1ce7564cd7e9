// The C interface of geossl's shim over PyTorch's c10d (src/dist/c10d.cpp),
// shared with the separately built NCCL library: that library includes this
// header and returns a GeosslGroup holding a ProcessGroupNCCL, which the
// collective functions below drive through c10d::Backend's virtual methods.
//
// Every function returns NULL on success or a malloc'ed, NUL-terminated
// error message (std::malloc) that the caller frees with
// geossl_c10d_free_error.
//
// The c10d C++ API is not a stable public API: this matches torch==2.11.0
// (the pin in scripts/setup.sh); the tests in src/dist/ would catch a change.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

// A key-value store (TCPStore behind a PrefixStore) the ranks rendezvous on.
struct GeosslStore {
  c10::intrusive_ptr<c10d::Store> store;
};

// One process group: the backend (ProcessGroupGloo or ProcessGroupNCCL),
// this process's rank and the world size.
struct GeosslGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
};

// The error conventions of both libraries (the shim's and the NCCL one).
namespace geossl_shim {
// A malloc'ed copy of `what`, freed by geossl_c10d_free_error.
inline char *error_copy(const std::string &what) {
  char *out = static_cast<char *>(std::malloc(what.size() + 1));
  if (out != nullptr) std::memcpy(out, what.c_str(), what.size() + 1);
  return out;
}

// c10::Error's what() carries a C++ backtrace; its message alone is what a
// user can act on.
inline std::string message(const std::exception &e) {
  if (auto *c10 = dynamic_cast<const c10::Error *>(&e)) return c10->what_without_backtrace();
  return e.what();
}
}  // namespace geossl_shim

// Runs `body` and returns NULL, or the exception's message as a malloc'ed
// string. Variadic: braced initialisers in `body` contain unparenthesised
// commas.
#define GEOSSL_GUARDED(...)                                   \
  try {                                                       \
    __VA_ARGS__;                                              \
    return nullptr;                                           \
  } catch (const std::exception &e) {                         \
    return geossl_shim::error_copy(geossl_shim::message(e));  \
  } catch (...) {                                             \
    return geossl_shim::error_copy("unknown C++ error");      \
  }

extern "C" {
void geossl_c10d_free_error(char *e);

char *geossl_store_tcp(const char *host, int port, int is_server, int world_size,
                       int64_t timeout_ms, const char *prefix, GeosslStore **out);
char *geossl_store_port(GeosslStore *store, int *port);
void geossl_store_free(GeosslStore *store);

char *geossl_group_gloo(GeosslStore *store, int rank, int size, int64_t timeout_ms,
                        const char *loopback_host, GeosslGroup **out);
void geossl_group_free(GeosslGroup *group);

char *geossl_all_reduce_sum(GeosslGroup *group, at::Tensor **tensors, int n);
char *geossl_all_gather(GeosslGroup *group, at::Tensor *input, at::Tensor **out);
char *geossl_broadcast(GeosslGroup *group, at::Tensor **tensors, int n, int root);
char *geossl_barrier(GeosslGroup *group);
}
