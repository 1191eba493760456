#include "libkdn/dest.h"

#include <algorithm>
#include <string>

#include "libkdn/model_desc.h"

namespace kdn::libkdn {
namespace {

using Wide = __int128;

// Checks of the descriptor itself, and a copy of its scalar fields and base pointers.
Status CheckStructure(const kdn_dest* d, const DestUse& use, DestSpec* spec) {
  const std::string w = use.what;
  if (d == nullptr) return Status::InvalidArgument(w + " descriptor is NULL");
  KDN_ASSIGN_OR_RETURN(spec->dtype, FromApiDType(RawEnum(d->dtype), (w + ".dtype").c_str()));
  spec->elem_size = DTypeSize(spec->dtype);
  if (use.need_dtype && spec->dtype != use.dtype) {
    return Status::InvalidArgument(w + ".dtype is " + std::string(DTypeName(spec->dtype)) +
                                   ", must be " + std::string(DTypeName(use.dtype)));
  }
  if (d->n_kv_heads == 0 || d->head_dim == 0) {
    return Status::InvalidArgument(w + ": n_kv_heads and head_dim must be > 0");
  }
  if (d->n_kv_heads != use.n_kv_heads || d->head_dim != use.head_dim) {
    return Status::InvalidArgument(w + " shape is " + std::to_string(d->n_kv_heads) +
                                   " kv heads x " + std::to_string(d->head_dim) +
                                   " dims, the cache has " + std::to_string(use.n_kv_heads) +
                                   " x " + std::to_string(use.head_dim));
  }
  if (use.layer_begin > use.layer_end) {
    return Status::InvalidArgument("layer range [" + std::to_string(use.layer_begin) + ", " +
                                   std::to_string(use.layer_end) + ") is reversed");
  }
  if (use.layer_end > d->n_layers) {
    return Status::InvalidArgument("layer " + std::to_string(use.layer_end - 1) + " is beyond " +
                                   w + ".n_layers (" + std::to_string(d->n_layers) + ")");
  }
  if (d->block_size == 0) return Status::InvalidArgument(w + ".block_size is 0");
  if (d->block_stride < 0 || d->token_stride < 0 || d->head_stride < 0) {
    return Status::InvalidArgument(w + " has a negative stride");
  }
  if (d->n_kv_heads > 1 && d->head_stride < d->head_dim) {
    return Status::InvalidArgument(w + ".head_stride (" + std::to_string(d->head_stride) +
                                   ") is smaller than head_dim: heads would overlap");
  }
  if (d->block_table != nullptr && d->slot_mapping == nullptr && d->n_block_table == 0) {
    return Status::InvalidArgument(w + ".block_table is set but n_block_table is 0");
  }
  spec->n_kv_heads = d->n_kv_heads;
  spec->head_dim = d->head_dim;
  spec->block_size = d->block_size;
  spec->block_stride = d->block_stride;
  spec->token_stride = d->token_stride;
  spec->head_stride = d->head_stride;
  spec->capacity_tokens = d->capacity_tokens;
  spec->k_base.assign(d->n_layers, nullptr);
  spec->v_base.assign(d->n_layers, nullptr);
  // Only the layers the call touches are read (and kept): the caller vouches for those entries.
  for (uint32_t l = use.layer_begin; l < use.layer_end; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      void* const* arr = kv == 0 ? d->k_base : d->v_base;
      void* p = arr != nullptr ? arr[l] : nullptr;
      if (p != nullptr && reinterpret_cast<uintptr_t>(p) % spec->elem_size != 0) {
        return Status::InvalidArgument(w + (kv == 0 ? ".k_base[" : ".v_base[") + std::to_string(l) +
                                       "] is not aligned to its element size");
      }
      (kv == 0 ? spec->k_base : spec->v_base)[l] = p;
    }
  }
  return Status::OK();
}

// Row offset of token t with overflow-free arithmetic; checks the table entry it uses.
Status RowOffsetChecked(const kdn_dest* d, const std::string& w, uint32_t t, Wide* row,
                        bool* skip) {
  *skip = false;
  Wide block;
  Wide in_block;
  if (d->slot_mapping != nullptr) {
    const int64_t slot = d->slot_mapping[t];
    if (slot < 0) {
      *skip = true;
      return Status::OK();
    }
    block = slot / d->block_size;
    in_block = slot % d->block_size;
  } else {
    const uint32_t logical = t / d->block_size;
    if (d->block_table != nullptr) {
      const int32_t phys = d->block_table[logical];
      if (phys < 0) {
        return Status::InvalidArgument(w + ".block_table[" + std::to_string(logical) + "] is " +
                                       std::to_string(phys) + " (token " + std::to_string(t) + ")");
      }
      block = phys;
    } else {
      block = logical;
    }
    in_block = t % d->block_size;
  }
  *row = block * d->block_stride + in_block * d->token_stride;
  return Status::OK();
}

// Checks the tokens [first, last] (all of them, or the listed ones) and copies the table prefix.
template <typename ForEachToken>
Status CheckTokens(const kdn_dest* d, const DestUse& use, uint32_t max_token, bool any,
                   ForEachToken for_each, DestSpec* spec) {
  const std::string w = use.what;
  if (!any) return Status::OK();
  if (max_token >= d->capacity_tokens) {
    return Status::InvalidArgument("token " + std::to_string(max_token) + " is beyond " + w +
                                   ".capacity_tokens (" + std::to_string(d->capacity_tokens) + ")");
  }
  if (d->slot_mapping != nullptr) {
    if (max_token >= d->n_slots) {
      return Status::InvalidArgument("token " + std::to_string(max_token) + " is beyond " + w +
                                     ".n_slots (" + std::to_string(d->n_slots) + ")");
    }
  } else if (d->block_table != nullptr) {
    const uint32_t logical = max_token / d->block_size;
    if (logical >= d->n_block_table) {
      return Status::InvalidArgument("token " + std::to_string(max_token) + " needs block " +
                                     std::to_string(logical) + ", beyond " + w +
                                     ".n_block_table (" + std::to_string(d->n_block_table) + ")");
    }
  }
  Wide max_row = 0;
  Status status;
  for_each([&](uint32_t t) {
    if (!status.ok()) return;
    Wide row;
    bool skip;
    status = RowOffsetChecked(d, w, t, &row, &skip);
    if (status.ok() && !skip) max_row = std::max(max_row, row);
  });
  KDN_RETURN_IF_ERROR(status);
  const Wide last = max_row + Wide{d->n_kv_heads - 1} * d->head_stride + d->head_dim;
  const Wide bytes = last * static_cast<Wide>(spec->elem_size);
  if (bytes > Wide{INT64_MAX}) return Status::InvalidArgument(w + " addresses beyond 2^63 bytes");
  for (size_t l = 0; l < spec->k_base.size(); ++l) {
    for (void* p : {spec->k_base[l], spec->v_base[l]}) {
      if (p != nullptr && Wide{reinterpret_cast<uintptr_t>(p)} + bytes > Wide{UINTPTR_MAX}) {
        return Status::InvalidArgument(w + " layer " + std::to_string(l) +
                                       " wraps the address space");
      }
    }
  }
  if (d->slot_mapping != nullptr) {
    spec->has_slot_mapping = true;
    spec->slot_mapping.assign(d->slot_mapping, d->slot_mapping + max_token + 1);
  } else if (d->block_table != nullptr) {
    spec->has_block_table = true;
    spec->block_table.assign(d->block_table, d->block_table + max_token / d->block_size + 1);
  }
  return Status::OK();
}

}  // namespace

DestAddressing DestSpec::addressing() const {
  DestAddressing a;
  a.block_stride = block_stride;
  a.token_stride = token_stride;
  a.head_stride = head_stride;
  a.block_size = block_size;
  a.head_dim = head_dim;
  a.block_table = has_block_table ? block_table.data() : nullptr;
  a.slot_mapping = has_slot_mapping ? slot_mapping.data() : nullptr;
  return a;
}

Result<std::shared_ptr<const DestSpec>> ValidateDest(const kdn_dest* d, const DestUse& use,
                                                     uint32_t token_begin, uint32_t n_tokens) {
  auto spec = std::make_shared<DestSpec>();
  KDN_RETURN_IF_ERROR(CheckStructure(d, use, spec.get()));
  if (uint64_t{token_begin} + n_tokens > UINT32_MAX) {
    return Status::InvalidArgument("token range overflows 32 bits");
  }
  const uint32_t max_token = n_tokens > 0 ? token_begin + n_tokens - 1 : 0;
  KDN_RETURN_IF_ERROR(CheckTokens(
      d, use, max_token, n_tokens > 0,
      [&](auto&& f) {
        for (uint32_t t = token_begin; t < token_begin + n_tokens; ++t) f(t);
      },
      spec.get()));
  return std::shared_ptr<const DestSpec>(std::move(spec));
}

Result<std::shared_ptr<const DestSpec>> ValidateDestTokens(const kdn_dest* d, const DestUse& use,
                                                           std::span<const uint32_t> tokens) {
  auto spec = std::make_shared<DestSpec>();
  KDN_RETURN_IF_ERROR(CheckStructure(d, use, spec.get()));
  uint32_t max_token = 0;
  for (uint32_t t : tokens) max_token = std::max(max_token, t);
  KDN_RETURN_IF_ERROR(CheckTokens(
      d, use, max_token, !tokens.empty(),
      [&](auto&& f) {
        for (uint32_t t : tokens) f(t);
      },
      spec.get()));
  return std::shared_ptr<const DestSpec>(std::move(spec));
}

}  // namespace kdn::libkdn
