// /.kdn/metrics: the figures of /.kdn/stats in the Prometheus text exposition format (version
// 0.0.4), for a node exporter's textfile collector or any scraper that reads a file. Names start
// with `kdn_`, carry their unit (`_bytes`, `_seconds`), counters end in `_total`:
//
//   kdn_fuse_requests_total{op="lookup",outcome="ok"}   every FUSE request answered, per
//                                                       operation and outcome (ok or the errno)
//   kdn_store_read_duration_seconds                     histogram of chunk reads
//   kdn_store_*, kdn_fs_*                               the store's and the filesystem's counters
//                                                       and gauges
//
// Everything here is store-wide, so it follows /.kdn/stats' rule: root and the store's owner get
// it; every other user reads a file with `kdn_store_wide_metrics 0` only.
#ifndef KDN_FS_KDNFS_METRICS_H_
#define KDN_FS_KDNFS_METRICS_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "kdn/store.h"

namespace kdn::fs {

struct FsCounters;
class RequestOutcomes;

struct MetricsSources {
  const StoreStats& store;
  const StoreUsage& usage;
  const FsCounters& fs;
  size_t staged_files = 0;
  const RequestOutcomes& requests;
};

std::string RenderMetrics(const MetricsSources& sources);

// What a user other than root and the store's owner reads.
inline constexpr std::string_view kUnprivilegedMetricsText =
    "# HELP kdn_store_wide_metrics Whether this file holds the store-wide metrics (only root and "
    "the store's owner get them).\n"
    "# TYPE kdn_store_wide_metrics gauge\n"
    "kdn_store_wide_metrics 0\n";

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_METRICS_H_
