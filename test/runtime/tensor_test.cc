#include <cstring>
#include <random>

#include "runtime/tensor.h"
#include "test/common/gpu_test.h"

using namespace kiln;

namespace {

HostTensor random_host(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  HostTensor h(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  h.fill_random(rng, -3.0, 3.0);
  return h;
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), size_t(a.nbytes())) == 0;
}

// A DLPack producer, as PyTorch would be: owns a buffer and counts its deleter's calls.
struct Producer {
  std::vector<float> data;
  std::vector<int64_t> shape, strides;
  int* deleted;
  DLManagedTensor managed{};
};

DLManagedTensor* produce(std::vector<int64_t> shape, std::vector<int64_t> strides, int* deleted,
                         DLDataType dtype = {kDLFloat, 32, 1}, DLDeviceType device = kDLCPU) {
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) n += (shape[i] - 1) * (strides.empty() ? 0 : strides[i]);
  auto* p = new Producer{std::vector<float>(std::max<int64_t>(n, 64)), std::move(shape),
                         std::move(strides), deleted};
  for (size_t i = 0; i < p->data.size(); ++i) p->data[i] = 0.5f * float(i) - 7.0f;
  DLTensor& t = p->managed.dl_tensor;
  t.data = p->data.data();
  t.device = {device, 0};
  t.ndim = int32_t(p->shape.size());
  t.dtype = dtype;
  t.shape = p->shape.data();
  t.strides = p->strides.empty() ? nullptr : p->strides.data();
  t.byte_offset = 0;
  p->managed.manager_ctx = p;
  p->managed.deleter = [](DLManagedTensor* self) {
    auto* prod = static_cast<Producer*>(self->manager_ctx);
    ++*prod->deleted;
    delete prod;
  };
  return &p->managed;
}

}  // namespace

TEST_CASE("tensor: host round trip keeps every byte, for each dtype and shape", "[runtime][tensor]") {
  uint64_t seed = 1;
  for (DType dt : kAllDTypes) {
    for (std::vector<int64_t> shape : {std::vector<int64_t>{1}, {7, 3}, {2, 129, 5}, {0, 4}, {}}) {
      HostTensor h = random_host(dt, shape, seed++);
      auto t = Tensor::from_host(h);
      REQUIRE(t.ok());
      CHECK(t->is_contiguous());
      CHECK(t->owns_memory());
      CHECK(t->device() == DeviceId::cpu());
      auto back = t->to_host();
      REQUIRE(back.ok());
      INFO(h.type_string());
      CHECK(same_bytes(*back, h));
    }
  }
}

TEST_CASE("tensor: wrapping caller memory with strides reads a transposed view", "[runtime][tensor]") {
  HostTensor h = random_host(DType::bf16, {5, 3}, 9);
  // View the 5x3 row-major buffer as its 3x5 transpose.
  auto t = Tensor::wrap(h.data(), DType::bf16, {3, 5}, {1, 3}, DeviceId::cpu());
  REQUIRE(t.ok());
  CHECK(!t->is_contiguous());
  CHECK(!t->owns_memory());
  CHECK(t->type_string() == "bf16[3, 5] cpu");
  auto back = t->to_host();
  REQUIRE(back.ok());
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 5; ++j) CHECK(back->get(i * 5 + j) == h.get(j * 3 + i));
  // Negative strides: the same buffer read back to front along dim 0.
  auto flipped = Tensor::wrap(h.data() + 4 * 3 * 2, DType::bf16, {5, 3}, {-3, 1}, DeviceId::cpu());
  REQUIRE(flipped.ok());
  auto fb = flipped->to_host();
  REQUIRE(fb.ok());
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 3; ++j) CHECK(fb->get(i * 3 + j) == h.get((4 - i) * 3 + j));
}

TEST_CASE("tensor: bad wraps are errors", "[runtime][tensor]") {
  float x[4];
  CHECK(!Tensor::wrap(x, DType::f32, {2, -1}, {}, DeviceId::cpu()).ok());
  CHECK(!Tensor::wrap(x, DType::f32, {2, 2}, {1}, DeviceId::cpu()).ok());
  CHECK(!Tensor::wrap(nullptr, DType::f32, {2, 2}, {}, DeviceId::cpu()).ok());
  CHECK(Tensor::wrap(nullptr, DType::f32, {0, 2}, {}, DeviceId::cpu()).ok());
}

TEST_CASE("tensor: DLPack dtypes map both ways", "[runtime][tensor][dlpack]") {
  for (DType dt : kAllDTypes) {
    auto dl = to_dlpack_dtype(dt);
    REQUIRE(dl.ok());
    CHECK(dl->lanes == 1);
    CHECK(dl->bits == dtype_size(dt) * 8);
    auto back = from_dlpack_dtype(*dl);
    REQUIRE(back.ok());
    CHECK(*back == dt);
  }
  CHECK(to_dlpack_dtype(DType::bf16)->code == kDLBfloat);
  CHECK(to_dlpack_dtype(DType::boolean)->code == 6);  // kDLBool
  CHECK(*from_dlpack_dtype({kDLUInt, 8, 1}) == DType::u8);  // numpy's and torch's uint8, not bool
  CHECK(*from_dlpack_dtype({kDLFloat, 64, 1}) == DType::f64);
  CHECK(*from_dlpack_dtype({kDLUInt, 64, 1}) == DType::u64);
  auto f8 = from_dlpack_dtype({kDLFloat, 8, 1});
  REQUIRE(!f8.ok());
  CHECK(status_message(f8.status()).find("code 2, 8 bits") != std::string::npos);
  CHECK(!from_dlpack_dtype({kDLFloat, 32, 4}).ok());
  CHECK(!from_dlpack_dtype({kDLComplex, 64, 1}).ok());
}

TEST_CASE("tensor: DLPack import wraps without copying and keeps the producer's deleter",
          "[runtime][tensor][dlpack]") {
  int deleted = 0;
  DLManagedTensor* m = produce({4, 6}, {}, &deleted);
  void* producer_data = m->dl_tensor.data;
  {
    auto t = Tensor::from_dlpack(m);
    REQUIRE(t.ok());
    CHECK(t->data() == producer_data);  // no copy
    CHECK(t->shape() == std::vector<int64_t>{4, 6});
    CHECK(t->strides() == std::vector<int64_t>{6, 1});
    Tensor copy = *t;
    auto h = copy.to_host();
    REQUIRE(h.ok());
    for (int64_t i = 0; i < 24; ++i) CHECK(h->get(i) == 0.5 * double(i) - 7.0);
    CHECK(deleted == 0);
  }
  CHECK(deleted == 1);  // once, after the last copy went away

  // Strided producer (a column slice) with a byte offset.
  deleted = 0;
  m = produce({3, 2}, {5, 2}, &deleted);
  m->dl_tensor.byte_offset = 4;  // starts at element 1
  auto t = Tensor::from_dlpack(m);
  REQUIRE(t.ok());
  auto h = t->to_host();
  REQUIRE(h.ok());
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j) CHECK(h->get(i * 2 + j) == 0.5 * double(1 + 5 * i + 2 * j) - 7.0);
  t = Tensor();
  CHECK(deleted == 1);
}

TEST_CASE("tensor: DLPack import errors leave the producer's tensor alone", "[runtime][tensor][dlpack]") {
  int deleted = 0;
  for (auto* m : {produce({2}, {}, &deleted, {kDLFloat, 8, 1}),
                  produce({2}, {}, &deleted, {kDLFloat, 32, 1}, kDLVulkan),
                  produce({2, 2}, {}, &deleted)}) {
    if (m->dl_tensor.ndim == 2) m->dl_tensor.ndim = -1;  // malformed
    int before = deleted;
    auto t = Tensor::from_dlpack(m);
    CHECK(!t.ok());
    INFO(status_message(t.status()));
    CHECK(deleted == before);
    m->deleter(m);
  }
  CHECK(deleted == 3);
  CHECK(!Tensor::from_dlpack(nullptr).ok());
}

TEST_CASE("tensor: DLPack export shares ownership until the consumer's deleter runs",
          "[runtime][tensor][dlpack]") {
  HostTensor h = random_host(DType::f16, {3, 7}, 21);
  auto t = Tensor::from_host(h);
  REQUIRE(t.ok());
  auto exported = t->to_dlpack();
  REQUIRE(exported.ok());
  DLManagedTensor* m = *exported;
  CHECK(m->dl_tensor.data == t->data());
  CHECK(m->dl_tensor.dtype.code == kDLFloat);
  CHECK(m->dl_tensor.dtype.bits == 16);
  CHECK(m->dl_tensor.device.device_type == kDLCPU);
  *t = Tensor();  // our handle is gone; the export still keeps the memory
  auto back = Tensor::from_dlpack(m);  // a consumer that is kiln itself
  REQUIRE(back.ok());
  auto hb = back->to_host();
  REQUIRE(hb.ok());
  CHECK(same_bytes(*hb, h));

  // A wrapped tensor with an owner releases it only through the export's deleter.
  int released = 0;
  std::vector<float> buf(6, 1.5f);
  {
    auto w = Tensor::wrap(buf.data(), DType::f32, {2, 3}, {}, DeviceId::cpu(),
                          std::shared_ptr<void>(buf.data(), [&](void*) { ++released; }));
    REQUIRE(w.ok());
    auto e = w->to_dlpack();
    REQUIRE(e.ok());
    *w = Tensor();
    CHECK(released == 0);
    (*e)->deleter(*e);
  }
  CHECK(released == 1);
}

TEST_CASE("tensor: device copies and DLPack on the GPU", "[runtime][tensor][gpu]") {
  KILN_REQUIRE_GPU();
  for (DType dt : {DType::bf16, DType::f32, DType::boolean}) {
    for (std::vector<int64_t> shape : {std::vector<int64_t>{1}, {33, 17}, {2, 1023, 3}}) {
      HostTensor h = random_host(dt, shape, 77);
      auto d = Tensor::from_host(h, DeviceId::cuda(0));
      REQUIRE(d.ok());
      CHECK(d->device() == DeviceId::cuda(0));
      auto back = d->to_host();
      REQUIRE(back.ok());
      CHECK(same_bytes(*back, h));
      // Export to DLPack and import again: the same device pointer, the same values.
      auto e = d->to_dlpack();
      REQUIRE(e.ok());
      CHECK((*e)->dl_tensor.device.device_type == kDLCUDA);
      auto imported = Tensor::from_dlpack(*e);
      REQUIRE(imported.ok());
      CHECK(imported->data() == d->data());
      auto hi = imported->to_host();
      REQUIRE(hi.ok());
      CHECK(same_bytes(*hi, h));
    }
  }
  // A transposed view of a device tensor gathers correctly.
  HostTensor h = random_host(DType::f32, {4, 9}, 5);
  auto d = Tensor::from_host(h, DeviceId::cuda(0));
  REQUIRE(d.ok());
  auto view = Tensor::wrap(d->data(), DType::f32, {9, 4}, {1, 9}, DeviceId::cuda(0));
  REQUIRE(view.ok());
  auto hv = view->to_host();
  REQUIRE(hv.ok());
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t j = 0; j < 4; ++j) CHECK(hv->get(i * 4 + j) == h.get(j * 9 + i));
  test::gpu_summary().push_back({"Tensor host<->device + DLPack device wrap", "bytes identical, zero-copy import"});
}

TEST_CASE("tensor: device tensors without a GPU report why", "[runtime][tensor]") {
  if (test::gpu_unavailable_reason().empty()) return;  // covered by the [gpu] test above
  auto d = Tensor::empty_cuda(DType::f32, {4});
  REQUIRE(!d.ok());
  CHECK(status_message(d.status()).rfind("no CUDA device: ", 0) == 0);
  CHECK(!Tensor::from_host(random_host(DType::f32, {4}, 1), DeviceId::cuda(0)).ok());
}
