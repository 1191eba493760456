// kdnctl origin-gc: deletes the chunk objects of an origin that no namespace object names and
// that are older than a grace period (fs/edge/origin_gc.h; docs/origin.md, "Garbage").
#include <cstdio>
#include <string>

#include "fs/edge/origin_gc.h"
#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/origin.h"

namespace kdnctl {
namespace {

constexpr char kCmd[] = "origin-gc";

constexpr char kOriginGcUsageText[] =
    "Usage: kdnctl origin-gc [--grace SECONDS [--force]] [--dry-run] [--endpoint URL] ORIGIN\n"
    "Deletes the chunk objects of an origin (s3://BUCKET[/PREFIX], file:///DIR or /DIR) that no\n"
    "namespace object names and that were written at least --grace seconds ago (default 3600).\n"
    "The grace protects uploads in flight: an edge puts a chunk before the name that points at\n"
    "it, and an edge that names a chunk it finds older than 600 s refreshes it first: a grace\n"
    "below 1200 s could delete a chunk that is being named, and is refused without --force.\n"
    "Each chunk is checked again just before it is deleted. With --grace 0 --force every\n"
    "unnamed chunk goes (for tests). Prints one line per chunk deleted (with\n"
    "--dry-run: that would be; nothing is deleted) and a summary. A namespace object that cannot\n"
    "be read stops it before anything is deleted. S3 credentials as for kdnfs (AWS_ACCESS_KEY_ID\n"
    "and AWS_SECRET_ACCESS_KEY, or the credentials file); --endpoint as kdnfs's\n"
    "origin_endpoint. Exits 0 when done, 1 on an origin error, 2 on bad arguments.\n";

constexpr OptionSpec kSpecs[] = {
    {"grace", 0, true},
    {"dry-run", 'n', false},
    {"force", 0, false},
    {"endpoint", 0, true},
};

}  // namespace

int RunOriginGc(int argc, char** argv) {
  kdn::Result<Args> args = ParseArgs(argc, argv, kSpecs);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kOriginGcUsageText, stdout);
    return kExitOk;
  }
  if (args->positional.size() != 1) return UsageError(kCmd, "expected one ORIGIN");
  kdn::edge::GcOptions options;
  if (auto grace = args->Get("grace")) {
    kdn::Result<uint64_t> seconds = ParseU64(*grace, "grace");
    if (!seconds.ok()) return UsageError(kCmd, seconds.status().message());
    options.grace = std::chrono::seconds(static_cast<int64_t>(*seconds));
  }
  if (options.grace < kdn::edge::kMinSafeGcGrace && !args->Has("force")) {
    return UsageError(kCmd, "--grace " + std::to_string(options.grace.count()) + " is below " +
                                std::to_string(kdn::edge::kMinSafeGcGrace.count()) +
                                " s, twice the age at which edges refresh the chunks they name: "
                                "it could delete a chunk being named (--force to do it anyway)");
  }
  options.dry_run = args->Has("dry-run");
  kdn::origin::OriginOptions open;
  open.url = args->positional[0];
  if (open.url.starts_with("/")) open.url = "file://" + open.url;
  open.endpoint = args->Get("endpoint").value_or("");
  kdn::Result<std::unique_ptr<kdn::origin::Origin>> origin = kdn::origin::OpenOrigin(open);
  if (!origin.ok()) return Fail(kCmd, kExitBadInput, origin.status().ToString());
  const char* verb = options.dry_run ? "would delete" : "deleted";
  options.on_unnamed = [verb](const kdn::origin::ObjectInfo& chunk, int64_t age_s) {
    std::printf("%s %s (%llu bytes, %s)\n", verb, chunk.key.c_str(),
                static_cast<unsigned long long>(chunk.size),
                age_s < 0 ? "age unknown" : (std::to_string(age_s) + " s old").c_str());
  };
  kdn::Result<kdn::edge::GcReport> report = kdn::edge::CollectUnnamedChunks(**origin, options);
  if (!report.ok()) {
    return Fail(kCmd, kExitBadInput, (*origin)->Describe() + ": " + report.status().ToString());
  }
  std::printf(
      "%s: %llu names, %llu chunks, %llu unnamed: %llu %s (%llu bytes), %llu within the grace, "
      "%llu refreshed since listed, %llu left for the next run\n",
      (*origin)->Describe().c_str(), static_cast<unsigned long long>(report->names),
      static_cast<unsigned long long>(report->chunks),
      static_cast<unsigned long long>(report->unnamed),
      static_cast<unsigned long long>(report->deleted), verb,
      static_cast<unsigned long long>(report->deleted_bytes),
      static_cast<unsigned long long>(report->young),
      static_cast<unsigned long long>(report->refreshed),
      static_cast<unsigned long long>(report->deferred));
  return kExitOk;
}

}  // namespace kdnctl
