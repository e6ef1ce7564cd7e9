// geossl's shim over PyTorch's c10d (the engine under torch.distributed):
// TCPStore + PrefixStore rendezvous, ProcessGroupGloo, and the four
// collectives geossl uses, driven through c10d::Backend so that a
// ProcessGroupNCCL from the separately built NCCL library works the same.
// Every collective waits for its Work and turns a failure (a peer gone, the
// timeout passed) into the returned error string; see c10d.h.

#include "c10d.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {
// Starts a collective (`start()` returns its Work) and waits for it; Work::wait
// rethrows the backend's exception.
//
// Starting is serialised process-wide: torch 2.11's c10d::FlightRecorder, a
// per-process singleton every ProcessGroupGloo::enqueue records into, updates
// its map of groups (all_pg_status_) before taking its own mutex, so two
// groups starting collectives at once in one process corrupt that map (a
// SIGSEGV in std::_Rb_tree_insert_and_rebalance). A rank has one group, but
// the tests run ranks as threads of one process. Starting only enqueues, so
// the lock is brief and the wait stays outside it.
template <typename F>
void run(F start) {
  static std::mutex starting;
  c10::intrusive_ptr<c10d::Work> work;
  {
    std::lock_guard<std::mutex> lock(starting);
    work = start();
  }
  work->wait();
}

// Detached aliases: collectives write in place into tensors that may
// require grad (parameters), which autograd would refuse.
std::vector<at::Tensor> detached(at::Tensor **ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(ts[i]->detach());
  return out;
}

// Indices of `ts` grouped by dtype, groups in order of first appearance (the
// same on every rank, since every rank passes the same list).
std::vector<std::vector<size_t>> by_dtype(const std::vector<at::Tensor> &ts) {
  std::vector<std::vector<size_t>> groups;
  std::vector<at::ScalarType> types;
  for (size_t i = 0; i < ts.size(); ++i) {
    size_t g = 0;
    while (g < types.size() && types[g] != ts[i].scalar_type()) ++g;
    if (g == types.size()) {
      types.push_back(ts[i].scalar_type());
      groups.emplace_back();
    }
    groups[g].push_back(i);
  }
  return groups;
}

// Runs `collective` once per dtype on one flat buffer holding all tensors of
// that dtype (torch's _flatten_dense_tensors / _unflatten_dense_tensors),
// then copies the results back; a lone contiguous tensor is used in place.
template <typename F>
void coalesced(std::vector<at::Tensor> &ts, F collective) {
  for (const auto &group : by_dtype(ts)) {
    if (group.size() == 1 && ts[group[0]].is_contiguous()) {
      std::vector<at::Tensor> one{ts[group[0]]};
      run([&] { return collective(one); });
      continue;
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t i : group) flat_parts.push_back(ts[i].reshape({-1}));
    std::vector<at::Tensor> flat{at::cat(flat_parts)};
    run([&] { return collective(flat); });
    int64_t offset = 0;
    for (size_t i : group) {
      int64_t n = ts[i].numel();
      ts[i].copy_(flat[0].narrow(0, offset, n).view(ts[i].sizes()));
      offset += n;
    }
  }
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const char *loopback_host) {
  bool lazy = c10d::getDefaultGlooLazyInit();
  if (loopback_host != nullptr) return c10d::ProcessGroupGloo::createDeviceForHostname(loopback_host, lazy);
  return c10d::ProcessGroupGloo::createDefaultDevice(lazy);
}
}  // namespace

extern "C" {

void geossl_c10d_free_error(char *e) { std::free(e); }

// A TCPStore at host:port (the server when is_server, a client otherwise;
// port 0 on the server picks a free one, see geossl_store_port) behind a
// PrefixStore of `prefix`. Matches torch.distributed.rendezvous's
// _create_c10d_store: a multi-tenant server; clients retry until timeout_ms.
// The server does not wait for the other ranks here: the process group's own
// rendezvous does, with the same timeout.
char *geossl_store_tcp(const char *host, int port, int is_server, int world_size,
                       int64_t timeout_ms, const char *prefix, GeosslStore **out) {
  GEOSSL_GUARDED({
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = world_size;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    opts.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    *out = new GeosslStore{prefixed};
  })
}

// The port the store's TCPStore listens on (or connects to).
char *geossl_store_port(GeosslStore *store, int *port) {
  GEOSSL_GUARDED({
    c10::intrusive_ptr<c10d::Store> s = store->store;
    if (auto *prefixed = dynamic_cast<c10d::PrefixStore *>(s.get())) s = prefixed->getUnderlyingStore();
    auto *tcp = dynamic_cast<c10d::TCPStore *>(s.get());
    TORCH_CHECK(tcp != nullptr, "the store is not a TCPStore");
    *port = tcp->getPort();
  })
}

void geossl_store_free(GeosslStore *store) { delete store; }

// A ProcessGroupGloo of `size` ranks over `store` (blocks until every rank
// has joined, at most timeout_ms). Its transport device is chosen as
// torch.distributed's ProcessGroupGloo(store, rank, size, timeout) does:
// the interfaces in GLOO_SOCKET_IFNAME, else this host's resolved address
// (loopback when it does not resolve), except that a job whose store is on
// loopback (loopback_host non-NULL) binds loopback directly.
char *geossl_group_gloo(GeosslStore *store, int rank, int size, int64_t timeout_ms,
                        const char *loopback_host, GeosslGroup **out) {
  GEOSSL_GUARDED({
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    const char *ifnames = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifnames != nullptr && std::strlen(ifnames) > 0) {
      std::stringstream list(ifnames);
      std::string name;
      while (std::getline(list, name, ','))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(
            name, c10d::getDefaultGlooLazyInit()));
    } else {
      opts->devices.push_back(gloo_device(loopback_host));
    }
    opts->threads = static_cast<int>(opts->devices.size()) * 2;
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, opts);
    *out = new GeosslGroup{backend, rank, size};
  })
}

// Shuts the backend down first, as torch.distributed.destroy_process_group
// does (ProcessGroupNCCL warns, and may hang at exit, when destroyed
// without; Gloo's shutdown does nothing). Errors are moot at this point.
void geossl_group_free(GeosslGroup *group) {
  if (group == nullptr) return;
  try {
    group->backend->shutdown();
  } catch (...) {
  }
  delete group;
}

// tensors[i] = sum over ranks of tensors[i], in place; one allreduce per
// dtype on a flat buffer (torch's allreduce_coalesced, any dtype mix).
char *geossl_all_reduce_sum(GeosslGroup *group, at::Tensor **tensors, int n) {
  GEOSSL_GUARDED({
    auto ts = detached(tensors, n);
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    coalesced(ts, [&](std::vector<at::Tensor> &flat) { return group->backend->allreduce(flat, opts); });
  })
}

// *out = every rank's `input` ([n, ...]) concatenated in rank order along
// dim 0 ([size * n, ...]): torch.distributed.all_gather_into_tensor.
char *geossl_all_gather(GeosslGroup *group, at::Tensor *input, at::Tensor **out) {
  GEOSSL_GUARDED({
    at::Tensor in = input->detach().contiguous();
    std::vector<int64_t> sizes = in.sizes().vec();
    TORCH_CHECK(!sizes.empty(), "all_gather needs a tensor of at least one dimension");
    sizes[0] *= group->size;
    at::Tensor gathered = at::empty(sizes, in.options());
    run([&] { return group->backend->_allgather_base(gathered, in); });
    *out = new at::Tensor(gathered);
  })
}

// tensors[i] = root's tensors[i], in place; one broadcast per dtype on a
// flat buffer (as torch's _broadcast_coalesced).
char *geossl_broadcast(GeosslGroup *group, at::Tensor **tensors, int n, int root) {
  GEOSSL_GUARDED({
    auto ts = detached(tensors, n);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    coalesced(ts, [&](std::vector<at::Tensor> &flat) { return group->backend->broadcast(flat, opts); });
  })
}

// Returns once every rank has entered the barrier.
char *geossl_barrier(GeosslGroup *group) {
  GEOSSL_GUARDED(run([&] { return group->backend->barrier(); }))
}
}
