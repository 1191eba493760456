#include "fs/kdnctl/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kdnctl {

Progress::Progress(std::string what) : what_(std::move(what)), shown_(::isatty(STDERR_FILENO) == 1) {}

void Progress::Update(uint64_t done, uint64_t total) {
  if (!shown_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool complete = done >= total;
  if (drawn_ && !complete && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const unsigned percent = total == 0 ? 100u : static_cast<unsigned>(done * 100 / total);
  // \r and "erase to the end of the line": a shorter line leaves nothing of the longer one.
  std::fprintf(stderr, "\r%s %llu/%llu (%u%%)\033[K", what_.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
               percent);
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::Finish() {
  if (!drawn_) return;
  std::fputc('\n', stderr);
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace kdnctl
