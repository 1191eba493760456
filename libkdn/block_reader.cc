#include "libkdn/block_reader.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "libkdn/library_log.h"

namespace kdn::libkdn {
namespace {

std::string Hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string BlockReader::BlockName(uint32_t layer, KvKind kind) {
  return "layer " + std::to_string(layer) + (kind == KvKind::kKey ? " K" : " V") + " block";
}

std::string BlockReader::BlockName(uint32_t layer, KvKind kind, uint32_t group) const {
  std::string name = BlockName(layer, kind);
  if (header_.head_groups > 1) {
    const uint32_t first = group * header_.heads_per_group();
    name += ", head group " + std::to_string(group) + " (heads " + std::to_string(first) + ".." +
            std::to_string(first + header_.heads_per_group() - 1) + ")";
  }
  return name;
}

Result<std::unique_ptr<BlockReader>> BlockReader::Open(const std::string& path) {
  std::unique_ptr<BlockReader> r(new BlockReader());
  r->path_ = path;
  KDN_ASSIGN_OR_RETURN(r->file_, OpenFileSource(path));
  const uint64_t size = r->file_->size();

  std::vector<std::byte> fixed(std::min<uint64_t>(size, kKvFixedHeaderBytes));
  KDN_RETURN_IF_ERROR(r->file_->ReadAt(0, fixed));
  if (!HasKvMagic(fixed)) return Status::Corruption(path + ": not a .kv file (bad magic)");
  if (size < kKvFixedHeaderBytes) {
    return Status::Corruption(path + ": truncated: " + std::to_string(size) +
                              " bytes, shorter than the fixed header");
  }
  Result<uint64_t> header_bytes = KvHeaderBytes(fixed, size);
  if (!header_bytes.ok()) return header_bytes.status().WithContext(path);
  std::vector<std::byte> header(*header_bytes);
  KDN_RETURN_IF_ERROR(r->file_->ReadAt(0, header));
  Result<KvHeader> parsed = ParseKvHeader(header, size);
  if (!parsed.ok()) return parsed.status().WithContext(path);
  r->header_ = std::move(*parsed);
  if (r->header_.blocks.size() != 2 * size_t{r->header_.model.n_layers} * r->header_.head_groups) {
    return Status::Internal(path + ": parsed header has an inconsistent block table");
  }
  return r;
}

size_t BlockReader::ReadSize(uint32_t layer, KvKind kind, uint32_t group) const {
  const BlockEntry& b = header_.block(layer, kind, group);
  const uint64_t padded = (b.encoded_bytes + 4095) / 4096 * 4096;
  // The header parser checked that every block lies inside the file.
  return static_cast<size_t>(std::min(padded, file_->size() - b.offset));
}

Status BlockReader::ReadBlock(uint32_t layer, KvKind kind, std::span<std::byte> out,
                              uint32_t group) const {
  const BlockEntry& b = header_.block(layer, kind, group);
  const size_t n = ReadSize(layer, kind, group);
  if (out.size() < n) return Status::Internal("ReadBlock: buffer too small");
  const std::span<std::byte> dst = out.first(n);
  const auto verify = [&]() -> Status {
    const uint64_t sum = HashBytes64(dst.data(), b.encoded_bytes);
    if (sum == b.checksum) return Status::OK();
    return Status::Corruption(path_ + ": " + BlockName(layer, kind, group) +
                              ": checksum mismatch (stored " + Hex64(b.checksum) + ", computed " +
                              Hex64(sum) + ")");
  };
  Status s = file_->ReadAt(b.offset, dst);
  if (!s.ok()) return s.WithContext(BlockName(layer, kind, group));
  return verify();
}

}  // namespace kdn::libkdn
