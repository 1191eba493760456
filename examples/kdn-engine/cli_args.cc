#include "kdn-engine/cli_args.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kdn::engine {

Result<CliArgs> CliArgs::Parse(const std::vector<std::string>& args,
                               const std::set<std::string>& with_value,
                               const std::set<std::string>& flags) {
  CliArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      const std::string name = a.substr(2);
      if (flags.count(name)) {
        out.values_[name].push_back("1");
      } else if (with_value.count(name)) {
        if (i + 1 >= args.size()) return Status::InvalidArgument(a + " needs a value");
        out.values_[name].push_back(args[++i]);
      } else {
        return Status::InvalidArgument("unknown option " + a + " (see --help)");
      }
    } else {
      out.positional_.push_back(a);
    }
  }
  return out;
}

std::string CliArgs::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> CliArgs::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

Result<uint32_t> CliArgs::GetU32(const std::string& name, uint32_t fallback) const {
  if (!Has(name)) return fallback;
  const std::string v = Get(name);
  uint32_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) {
    return Status::InvalidArgument("--" + name + ": not a non-negative integer: '" + v + "'");
  }
  return n;
}

Result<float> CliArgs::GetFloat(const std::string& name, float fallback) const {
  if (!Has(name)) return fallback;
  return ParseFloat(Get(name), "--" + name);
}

Result<float> ParseFloat(const std::string& text, const std::string& what) {
  char* end = nullptr;
  errno = 0;
  const float v = std::strtof(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno != 0 || !std::isfinite(v)) {
    return Status::InvalidArgument(what + ": not a number: '" + text + "'");
  }
  return v;
}

std::vector<std::string> SplitList(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Result<std::string> ReadTextFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::FromErrno("open " + path, errno ? errno : ENOENT);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return Status::IOError("read " + path);
  return ss.str();
}

}  // namespace kdn::engine
