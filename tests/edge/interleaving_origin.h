// A test origin for races with the collector of unnamed chunks (fs/edge/origin_gc.h).
#ifndef KDN_TESTS_EDGE_INTERLEAVING_ORIGIN_H_
#define KDN_TESTS_EDGE_INTERLEAVING_ORIGIN_H_

#include <functional>
#include <memory>
#include <string>

#include "fs/edge/ns_object.h"
#include "kdn/origin.h"

namespace kdn::test {

// Passes every call to an origin, and runs `after_names_listed` once, right after the last page of
// a listing of the namespace: the moment between the collector's listing of the names and its
// deletes, where what another node does decides whether a chunk it names survives.
class InterleavingOrigin final : public origin::Origin {
 public:
  InterleavingOrigin(std::unique_ptr<origin::Origin> inner, std::function<void()> after_names_listed)
      : inner_(std::move(inner)), hook_(std::move(after_names_listed)) {}
  Status Put(std::string_view key, std::span<const uint8_t> data) override {
    return inner_->Put(key, data);
  }
  Status PutFile(std::string_view key, int fd, uint64_t size) override {
    return inner_->PutFile(key, fd, size);
  }
  Result<uint64_t> Get(std::string_view key, uint64_t offset, std::span<uint8_t> out) override {
    return inner_->Get(key, offset, out);
  }
  Result<origin::ObjectInfo> Head(std::string_view key) override { return inner_->Head(key); }
  Result<origin::ListPage> List(std::string_view prefix, std::string_view delimiter,
                                std::string_view token, unsigned max_keys) override {
    Result<origin::ListPage> page = inner_->List(prefix, delimiter, token, max_keys);
    if (page.ok() && page->next_token.empty() && prefix.starts_with(edge::kNsPrefix) && hook_) {
      std::function<void()> hook = std::move(hook_);
      hook_ = nullptr;
      hook();
    }
    return page;
  }
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Status Touch(std::string_view key) override { return inner_->Touch(key); }
  std::string Describe() const override { return inner_->Describe(); }

 private:
  std::unique_ptr<origin::Origin> inner_;
  std::function<void()> hook_;
};

}  // namespace kdn::test

#endif  // KDN_TESTS_EDGE_INTERLEAVING_ORIGIN_H_
