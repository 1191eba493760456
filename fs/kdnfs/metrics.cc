#include "fs/kdnfs/metrics.h"

#include <cinttypes>
#include <cstdio>

#include "fs/kdnfs/filesystem.h"
#include "fs/kdnfs/request_outcomes.h"

namespace kdn::fs {
namespace {

class Exposition {
 public:
  // One metric family without labels.
  void Counter(std::string_view name, std::string_view help, uint64_t value) {
    Header(name, help, "counter");
    Sample(name, "", value);
  }
  void Gauge(std::string_view name, std::string_view help, uint64_t value) {
    Header(name, help, "gauge");
    Sample(name, "", value);
  }
  void Header(std::string_view name, std::string_view help, std::string_view type) {
    Append("# HELP ", name, " ", help, "\n");
    Append("# TYPE ", name, " ", type, "\n");
  }
  void Sample(std::string_view name, std::string_view labels, uint64_t value) {
    Append(name, labels.empty() ? "" : "{", labels, labels.empty() ? "" : "}", " ");
    text_ += std::to_string(value);
    text_ += '\n';
  }
  void Sample(std::string_view name, std::string_view labels, double value) {
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%.9g", value);
    Append(name, labels.empty() ? "" : "{", labels, labels.empty() ? "" : "}", " ", buf, "\n");
  }
  std::string Take() { return std::move(text_); }

 private:
  template <typename... Parts>
  void Append(const Parts&... parts) {
    ((text_ += parts), ...);
  }
  std::string text_;
};

std::string SecondsLabel(uint64_t ns) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "le=\"%.9g\"", static_cast<double>(ns) / 1e9);
  return buf;
}

}  // namespace

std::string RenderMetrics(const MetricsSources& src) {
  Exposition m;
  const StoreStats& s = src.store;

  m.Header("kdn_fuse_requests_total",
           "FUSE requests answered, by operation and outcome (ok, or the errno replied).",
           "counter");
  src.requests.Visit([&m](FsOp op, int err, uint64_t n) {
    std::string labels = "op=\"" + std::string(FsOpName(op)) + "\",outcome=\"" +
                         (err == 0 ? std::string("ok") : ErrnoName(err)) + "\"";
    m.Sample("kdn_fuse_requests_total", labels, n);
  });

  m.Header("kdn_store_read_duration_seconds", "Time of chunk reads from the store.", "histogram");
  for (size_t i = 0; i + 1 < s.read_latency_buckets.size(); ++i) {
    const int pow2 = StoreStats::kReadLatencyFirstPow2 + static_cast<int>(i);
    m.Sample("kdn_store_read_duration_seconds_bucket", SecondsLabel((uint64_t{1} << pow2) - 1),
             s.read_latency_buckets[i]);
  }
  m.Sample("kdn_store_read_duration_seconds_bucket", "le=\"+Inf\"", s.read_latency_count);
  m.Sample("kdn_store_read_duration_seconds_sum", "",
           static_cast<double>(s.read_latency_sum_ns) / 1e9);
  m.Sample("kdn_store_read_duration_seconds_count", "", s.read_latency_count);

  m.Header("kdn_store_info", "The store's I/O engine, as a label.", "gauge");
  m.Sample("kdn_store_info", "io_engine=\"" + s.io_engine + "\"", uint64_t{1});
  m.Gauge("kdn_store_capacity_bytes", "Limit on stored bytes.", src.usage.capacity_bytes);
  m.Gauge("kdn_store_used_bytes", "Bytes the chunks take (4 KiB-rounded).", src.usage.used_bytes);
  m.Gauge("kdn_store_free_bytes", "Bytes a write can still use without evicting.",
          src.usage.free_bytes);
  m.Gauge("kdn_store_inodes", "Inodes, directories included.", src.usage.inodes);
  m.Gauge("kdn_store_files", "Regular files (hard links counted once).", s.files);
  m.Gauge("kdn_store_directories", "Directories.", s.directories);
  m.Gauge("kdn_store_chunks", "Distinct chunks stored.", s.chunks);
  m.Gauge("kdn_store_logical_bytes", "Sum of the regular files' sizes.", s.logical_bytes);
  m.Gauge("kdn_store_stored_bytes", "Sum of the distinct chunks' sizes.", s.stored_bytes);
  m.Gauge("kdn_store_allocated_bytes", "Chunk sizes rounded to 4 KiB.", s.allocated_bytes);
  m.Gauge("kdn_store_kv_chunks", "Chunks holding .kv content.", s.kv_chunks);
  m.Gauge("kdn_store_kv_raw_bytes", "Decoded size of the .kv chunks.", s.kv_raw_bytes);
  m.Gauge("kdn_store_kv_stored_bytes", "Encoded size of the .kv chunks.", s.kv_stored_bytes);
  m.Counter("kdn_store_puts_total", "Chunks written since the store was opened.", s.puts);
  m.Counter("kdn_store_put_bytes_total", "Bytes of chunks written.", s.put_bytes);
  m.Counter("kdn_store_dedup_hits_total", "Writes whose bytes were already stored.",
            s.dedup_hits);
  m.Counter("kdn_store_reads_total", "Chunk reads that succeeded.", s.reads);
  m.Counter("kdn_store_read_bytes_total", "Bytes read from chunks.", s.read_bytes);
  m.Counter("kdn_store_prefix_lookups_total", "Prefix lookups.", s.prefix_lookups);
  m.Counter("kdn_store_prefix_hits_total", "Prefix lookups that found a cache.", s.prefix_hits);
  m.Counter("kdn_store_evictions_total", "Chunks evicted.", s.evictions);
  m.Counter("kdn_store_evicted_bytes_total", "Bytes of evicted chunks.", s.evicted_bytes);
  m.Counter("kdn_store_errors_total", "I/O errors and checksum failures.", s.errors);
  m.Counter("kdn_store_log_syncs_total", "Syncs of the metadata log.", s.log_syncs);
  m.Gauge("kdn_store_unsynced_changes", "Committed changes not yet durable.",
          s.unsynced_changes);

  const FsCounters& f = src.fs;
  m.Counter("kdn_fs_reads_total", "read(2) requests served by kdnfs.", f.reads.load());
  m.Counter("kdn_fs_read_bytes_total", "Bytes read through kdnfs.", f.read_bytes.load());
  m.Counter("kdn_fs_writes_total", "write(2) requests.", f.writes.load());
  m.Counter("kdn_fs_write_bytes_total", "Bytes written.", f.write_bytes.load());
  m.Counter("kdn_fs_commits_total", "Staged files committed to the store.", f.commits.load());
  m.Counter("kdn_fs_commit_bytes_total", "Bytes of committed files.", f.commit_bytes.load());
  m.Counter("kdn_fs_refused_kv_total", "Commits refused: invalid .kv content.",
            f.refused_kv.load());
  m.Counter("kdn_fs_commit_errors_total", "Commits that failed otherwise (ENOSPC, I/O).",
            f.commit_errors.load());
  m.Gauge("kdn_fs_staged_files", "Files being written, not yet committed.", src.staged_files);
  m.Gauge("kdn_fs_passthrough", "1 when the kernel agreed to FUSE passthrough.",
          f.passthrough.load() ? 1 : 0);
  m.Counter("kdn_fs_passthrough_opens_total", "Opens read by the kernel from a chunk file.",
            f.passthrough_opens.load());
  m.Counter("kdn_fs_served_opens_total", "Opens read through kdnfs.", f.served_opens.load());
  m.Gauge("kdn_fs_backing_files", "Chunk files registered with the kernel now.",
          f.backing_files.load());
  return m.Take();
}

}  // namespace kdn::fs
