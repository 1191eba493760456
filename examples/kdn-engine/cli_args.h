// Command-line options of kdn-engine: `--name value` pairs (a name may repeat), `--flag`s, and
// positional arguments, checked against what the command accepts.
#ifndef KDN_EXAMPLES_KDN_ENGINE_CLI_ARGS_H_
#define KDN_EXAMPLES_KDN_ENGINE_CLI_ARGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kdn/status.h"

namespace kdn::engine {

class CliArgs {
 public:
  // args: what follows the command name. `with_value`: options that take a value; `flags`: ones
  // that do not. Anything else starting with "--" is an error.
  static Result<CliArgs> Parse(const std::vector<std::string>& args,
                               const std::set<std::string>& with_value,
                               const std::set<std::string>& flags);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // The last value given for `name`, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> All(const std::string& name) const;
  Result<uint32_t> GetU32(const std::string& name, uint32_t fallback) const;
  Result<float> GetFloat(const std::string& name, float fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Splits "a,b,c" (empty items dropped).
std::vector<std::string> SplitList(const std::string& list);
Result<float> ParseFloat(const std::string& text, const std::string& what);
Result<std::string> ReadTextFile(const std::string& path);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_CLI_ARGS_H_
