// The two engine implementations (chosen by CreateIoEngine).
#ifndef KDN_IOURING_ENGINES_H_
#define KDN_IOURING_ENGINES_H_

#include <memory>

#include "iouring/io_engine.h"

namespace kdn::io::internal {

Result<std::unique_ptr<IoEngine>> CreateUringEngine(const EngineOptions& options);
Result<std::unique_ptr<IoEngine>> CreatePsyncEngine(const EngineOptions& options);

}  // namespace kdn::io::internal

#endif  // KDN_IOURING_ENGINES_H_
