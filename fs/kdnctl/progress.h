// Progress of long work (convert, fsck, migrate), for a person watching a terminal: one line on
// stderr, rewritten in place ("kdnctl fsck: verifying chunks 1200/5000 (24%)"), at most ten
// times a second, ended with a newline when the work is done. When stderr is not a terminal (a
// log file, a pipe, CI) nothing is written at all, so that logs and scripts see only the
// command's results.
#ifndef KDN_FS_KDNCTL_PROGRESS_H_
#define KDN_FS_KDNCTL_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace kdnctl {

class Progress {
 public:
  // `what`: "kdnctl fsck: verifying chunks". Shown only when stderr is a terminal.
  explicit Progress(std::string what);
  ~Progress() { Finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` of `total` units; the line is redrawn when 100 ms have passed or the work is done.
  void Update(uint64_t done, uint64_t total);
  // Ends the line (if one was drawn); later updates draw a new one.
  void Finish();

 private:
  const std::string what_;
  const bool shown_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace kdnctl

#endif  // KDN_FS_KDNCTL_PROGRESS_H_
