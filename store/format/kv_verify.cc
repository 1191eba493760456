// VerifyKv: the complete check of a `.kv` file, one function for every caller (kdnctl verify, the
// store's commit, fsck), so that what one accepts the others accept too.
#include "kdn/format.h"
#include "store/format/guard_alloc.h"

namespace kdn {
namespace {

// The caller's source, lent to a KvReader (which wants to own one) for the duration of the check.
class BorrowedSource final : public ByteSource {
 public:
  explicit BorrowedSource(const ByteSource& source) : source_(source) {}
  uint64_t size() const override { return source_.size(); }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    return source_.ReadAt(offset, out);
  }

 private:
  const ByteSource& source_;
};

}  // namespace

Result<KvHeader> VerifyKv(const ByteSource& source) {
  return GuardAlloc("verify", [&]() -> Result<KvHeader> {
    // Open reads the fixed header, checks header_bytes against the file size (and the 256 MiB
    // header limit) before reading the rest, and checks every block's offset and size against
    // the file; VerifyAll then streams the blocks through 4 MiB windows.
    KDN_ASSIGN_OR_RETURN(std::unique_ptr<KvReader> reader,
                         KvReader::Open(std::make_unique<BorrowedSource>(source)));
    KDN_RETURN_IF_ERROR(reader->VerifyAll());
    return reader->header();
  });
}

}  // namespace kdn
