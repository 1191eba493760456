// Command-line parsing for kdnctl.
#include "fs/kdnctl/args.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "fs/kdnctl/commands.h"

namespace kdnctl {

std::optional<std::string> Args::Get(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

kdn::Result<Args> ParseArgs(int argc, char** argv, std::span<const OptionSpec> specs) {
  Args args;
  auto find_long = [&](std::string_view name) -> const OptionSpec* {
    for (const OptionSpec& s : specs) {
      if (name == s.name) return &s;
    }
    return nullptr;
  };
  auto find_short = [&](char c) -> const OptionSpec* {
    for (const OptionSpec& s : specs) {
      if (s.short_name == c) return &s;
    }
    return nullptr;
  };
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      args.positional.emplace_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a == "--help" || a == "-h") {
      args.help = true;
      continue;
    }
    const OptionSpec* spec = nullptr;
    std::optional<std::string> inline_value;
    std::string shown(a);
    if (a.substr(0, 2) == "--") {
      std::string_view name = a.substr(2);
      if (const size_t eq = name.find('='); eq != std::string_view::npos) {
        inline_value = std::string(name.substr(eq + 1));
        name = name.substr(0, eq);
        shown = "--" + std::string(name);
      }
      spec = find_long(name);
    } else if (a.size() == 2) {
      spec = find_short(a[1]);
    }
    if (spec == nullptr) return kdn::Status::InvalidArgument("unknown option " + shown);
    const std::string name = spec->name;
    if (args.Has(name)) return kdn::Status::InvalidArgument("option " + shown + " given twice");
    if (!spec->takes_value) {
      if (inline_value) return kdn::Status::InvalidArgument("option " + shown + " takes no value");
      args.flags.insert(name);
      continue;
    }
    if (inline_value) {
      args.values[name] = *inline_value;
    } else if (i + 1 < argc) {
      args.values[name] = argv[++i];
    } else {
      return kdn::Status::InvalidArgument("option " + shown + " needs a value");
    }
  }
  return args;
}

kdn::Result<uint64_t> ParseU64(const std::string& text, std::string_view option) {
  uint64_t v = 0;
  const auto res = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || res.ec != std::errc() || res.ptr != text.data() + text.size()) {
    return kdn::Status::InvalidArgument("--" + std::string(option) + ": '" + text +
                                        "' is not a non-negative integer");
  }
  return v;
}

kdn::Result<uint32_t> ParseU32(const std::string& text, std::string_view option) {
  KDN_ASSIGN_OR_RETURN(const uint64_t v, ParseU64(text, option));
  if (v > UINT32_MAX) {
    return kdn::Status::InvalidArgument("--" + std::string(option) + ": " + text + " is too large");
  }
  return static_cast<uint32_t>(v);
}

kdn::Result<uint32_t> HeadGroupsOption(const Args& a, const kdn::ModelIdentity& model,
                                       uint32_t absent) {
  const std::optional<std::string> text = a.Get("head-groups");
  if (!text) return absent;
  uint32_t groups = 0;
  if (*text == "auto") {
    groups = kdn::DefaultHeadGroups(model);
  } else {
    KDN_ASSIGN_OR_RETURN(groups, ParseU32(*text, "head-groups"));
  }
  if (kdn::Status st = kdn::CheckHeadGroups(model, groups); !st.ok()) {
    return kdn::Status::InvalidArgument("--head-groups " + *text + ": " + st.message());
  }
  return groups;
}

kdn::Result<float> ParseFloat(const std::string& text, std::string_view option) {
  float v = 0;
  const auto res = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || res.ec != std::errc() || res.ptr != text.data() + text.size() ||
      !std::isfinite(v)) {
    return kdn::Status::InvalidArgument("--" + std::string(option) + ": '" + text +
                                        "' is not a finite number");
  }
  return v;
}

std::string WithPath(const std::string& path, const kdn::Status& st) {
  if (st.message().find(path) != std::string::npos) return st.message();
  return path + ": " + st.message();
}

int Fail(std::string_view cmd, int code, std::string_view message) {
  std::fprintf(stderr, "kdnctl %.*s: %.*s\n", static_cast<int>(cmd.size()), cmd.data(),
               static_cast<int>(message.size()), message.data());
  return code;
}

int UsageError(std::string_view cmd, std::string_view message) {
  Fail(cmd, kExitUsage, message);
  std::fprintf(stderr, "Try 'kdnctl %.*s --help'.\n", static_cast<int>(cmd.size()), cmd.data());
  return kExitUsage;
}

}  // namespace kdnctl
