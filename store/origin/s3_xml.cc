#include "store/origin/s3_xml.h"

#include <charconv>
#include <ctime>

namespace kdn::origin::xml {
namespace {

Status Bad(std::string_view what) { return Status::Corruption("S3 XML: " + std::string(what)); }

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == ':';
}
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes character data with entities into `out`.
Status DecodeText(std::string_view s, std::string* out) {
  for (size_t i = 0; i < s.size();) {
    if (s[i] != '&') {
      out->push_back(s[i++]);
      continue;
    }
    size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 12) return Bad("unterminated entity");
    std::string_view ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") out->push_back('&');
    else if (ent == "lt") out->push_back('<');
    else if (ent == "gt") out->push_back('>');
    else if (ent == "quot") out->push_back('"');
    else if (ent == "apos") out->push_back('\'');
    else if (ent.size() >= 2 && ent[0] == '#') {
      int base = 10;
      std::string_view digits = ent.substr(1);
      if (digits[0] == 'x' || digits[0] == 'X') {
        base = 16;
        digits = digits.substr(1);
      }
      uint32_t cp = 0;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), cp, base);
      if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || cp == 0 ||
          cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return Bad("bad character reference");
      }
      AppendUtf8(cp, out);
    } else {
      return Bad("unknown entity");
    }
    i = semi + 1;
  }
  return Status::OK();
}

}  // namespace

const Node* Document::Child(const Node& parent, std::string_view name) const {
  for (uint32_t c : parent.children) {
    if (nodes[c].name == name) return &nodes[c];
  }
  return nullptr;
}

Result<Document> Parse(std::string_view in) {
  if (in.size() > kMaxInput) return Bad("response too large");
  Document doc;
  std::vector<uint32_t> stack;
  bool root_closed = false;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] != '<') {
      size_t lt = in.find('<', i);
      if (lt == std::string_view::npos) lt = in.size();
      std::string_view chars = in.substr(i, lt - i);
      if (stack.empty()) {
        for (char c : chars) {
          if (!IsSpace(c)) return Bad("text outside the root element");
        }
      } else {
        KDN_RETURN_IF_ERROR(DecodeText(chars, &doc.nodes[stack.back()].text));
      }
      i = lt;
      continue;
    }
    std::string_view rest = in.substr(i);
    if (rest.starts_with("<?")) {
      size_t end = in.find("?>", i + 2);
      if (end == std::string_view::npos) return Bad("unterminated declaration");
      i = end + 2;
      continue;
    }
    if (rest.starts_with("<!--")) {
      size_t end = in.find("-->", i + 4);
      if (end == std::string_view::npos) return Bad("unterminated comment");
      i = end + 3;
      continue;
    }
    if (rest.starts_with("<![CDATA[")) {
      size_t end = in.find("]]>", i + 9);
      if (end == std::string_view::npos || stack.empty()) return Bad("bad CDATA section");
      doc.nodes[stack.back()].text.append(in.substr(i + 9, end - i - 9));
      i = end + 3;
      continue;
    }
    if (rest.starts_with("<!")) return Bad("DOCTYPE and declarations are not accepted");
    bool closing = rest.size() > 1 && rest[1] == '/';
    size_t p = i + (closing ? 2 : 1);
    size_t name_start = p;
    while (p < in.size() && IsNameChar(in[p])) ++p;
    std::string_view qname = in.substr(name_start, p - name_start);
    if (qname.empty() || qname.size() > kMaxName) return Bad("bad element name");
    size_t colon = qname.rfind(':');
    std::string_view name = colon == std::string_view::npos ? qname : qname.substr(colon + 1);
    // Attributes are skipped (S3 answers carry only xmlns); quoted values may hold '>'.
    bool self_closing = false;
    char quote = 0;
    for (;; ++p) {
      if (p >= in.size()) return Bad("unterminated tag");
      char c = in[p];
      if (quote) {
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        if (closing) return Bad("attribute in a closing tag");
        quote = c;
      } else if (c == '>') {
        self_closing = !closing && in[p - 1] == '/';
        break;
      } else if (c == '<') {
        return Bad("'<' inside a tag");
      }
    }
    i = p + 1;
    if (closing) {
      if (stack.empty() || doc.nodes[stack.back()].name != name) return Bad("mismatched end tag");
      stack.pop_back();
      if (stack.empty()) root_closed = true;
      continue;
    }
    if (root_closed || (stack.empty() && !doc.nodes.empty())) return Bad("more than one root");
    if (doc.nodes.size() >= kMaxNodes) return Bad("too many elements");
    if (stack.size() >= kMaxDepth) return Bad("nested too deeply");
    uint32_t idx = static_cast<uint32_t>(doc.nodes.size());
    doc.nodes.push_back(Node{std::string(name), {}, {}});
    if (!stack.empty()) doc.nodes[stack.back()].children.push_back(idx);
    if (!self_closing) stack.push_back(idx);
    else if (stack.empty()) root_closed = true;
  }
  if (doc.nodes.empty()) return Bad("no root element");
  if (!stack.empty()) return Bad("unterminated element");
  return doc;
}

bool ParseError(std::string_view body, S3Error* out) {
  auto doc = Parse(body);
  if (!doc.ok() || doc->nodes[0].name != "Error") return false;
  const Node& root = doc->nodes[0];
  if (const Node* c = doc->Child(root, "Code")) out->code = c->text.substr(0, 128);
  if (const Node* m = doc->Child(root, "Message")) out->message = m->text.substr(0, 512);
  return true;
}

namespace {
Result<uint64_t> ParseU64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return Bad("bad number");
  return v;
}
std::string Unquote(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}
}  // namespace

namespace {

// Seconds since the epoch of a UTC calendar time, or 0 for one that is out of range (the age of
// that object is then unknown, never guessed). Both of S3's time formats end up here.
int64_t EpochOfUtc(int year, int month, int day, int hour, int minute, int second) {
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60) {
    return 0;
  }
  struct tm t {};
  t.tm_year = year - 1900;
  t.tm_mon = month - 1;
  t.tm_mday = day;
  t.tm_hour = hour;
  t.tm_min = minute;
  t.tm_sec = second;
  const time_t seconds = ::timegm(&t);
  return seconds < 0 ? 0 : static_cast<int64_t>(seconds);
}

// The decimal number that is exactly s[at, at + len), or -1.
int Digits(std::string_view s, size_t at, size_t len) {
  if (at + len > s.size()) return -1;
  int value = 0;
  std::string_view digits = s.substr(at, len);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value < 0) return -1;
  return value;
}

}  // namespace

int64_t ParseIsoTime(std::string_view s) {
  if (s.size() < 20 || s.size() > 32 || s.back() != 'Z') return 0;
  int field[6] = {};
  const size_t at[6] = {0, 5, 8, 11, 14, 17}, len[6] = {4, 2, 2, 2, 2, 2};
  const char sep[6] = {'-', '-', 'T', ':', ':', '.'};
  for (int i = 0; i < 6; ++i) {
    field[i] = Digits(s, at[i], len[i]);
    if (field[i] < 0) return 0;
    const size_t next = at[i] + len[i];
    if (next < s.size() && s[next] != sep[i] && !(i == 5 && s[next] == 'Z')) return 0;
  }
  return EpochOfUtc(field[0], field[1], field[2], field[3], field[4], field[5]);
}

int64_t ParseHttpDate(std::string_view s) {
  // "Sun, 06 Dec 2026 11:24:22 GMT": fixed columns (RFC 9110's IMF-fixdate).
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return 0;
  }
  static constexpr std::string_view kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int month = 0;
  for (int i = 0; i < 12; ++i) {
    if (s.substr(8, 3) == kMonths[i]) month = i + 1;
  }
  const int day = Digits(s, 5, 2), year = Digits(s, 12, 4), hour = Digits(s, 17, 2),
            minute = Digits(s, 20, 2), second = Digits(s, 23, 2);
  if (month == 0 || day < 0 || year < 0 || hour < 0 || minute < 0 || second < 0) return 0;
  return EpochOfUtc(year, month, day, hour, minute, second);
}

Result<ListPage> ParseListV2(std::string_view body) {
  KDN_ASSIGN_OR_RETURN(Document doc, Parse(body));
  const Node& root = doc.nodes[0];
  if (root.name != "ListBucketResult") return Bad("expected ListBucketResult, got " + root.name);
  ListPage page;
  bool truncated = false;
  for (uint32_t c : root.children) {
    const Node& n = doc.nodes[c];
    if (n.name == "Contents") {
      const Node* key = doc.Child(n, "Key");
      const Node* size = doc.Child(n, "Size");
      if (!key || !size) return Bad("Contents without Key or Size");
      KDN_ASSIGN_OR_RETURN(uint64_t sz, ParseU64(size->text));
      const Node* etag = doc.Child(n, "ETag");
      const Node* modified = doc.Child(n, "LastModified");
      page.objects.push_back({key->text, sz, etag ? Unquote(etag->text) : std::string(),
                              modified ? ParseIsoTime(modified->text) : 0});
    } else if (n.name == "CommonPrefixes") {
      const Node* p = doc.Child(n, "Prefix");
      if (!p) return Bad("CommonPrefixes without Prefix");
      page.prefixes.push_back(p->text);
    } else if (n.name == "IsTruncated") {
      truncated = n.text == "true";
    } else if (n.name == "NextContinuationToken") {
      page.next_token = n.text;
    }
  }
  if (truncated && page.next_token.empty()) return Bad("truncated listing without a token");
  if (!truncated) page.next_token.clear();
  return page;
}

Result<std::string> ParseInitiateMultipart(std::string_view body) {
  KDN_ASSIGN_OR_RETURN(Document doc, Parse(body));
  const Node& root = doc.nodes[0];
  const Node* id = doc.Child(root, "UploadId");
  if (root.name != "InitiateMultipartUploadResult" || !id || id->text.empty() ||
      id->text.size() > 1024) {
    return Bad("no UploadId in the answer to CreateMultipartUpload");
  }
  return id->text;
}

Status ParseCompleteMultipart(std::string_view body) {
  S3Error err;
  if (ParseError(body, &err)) {
    return Status::IOError("CompleteMultipartUpload: " + err.code + ": " + err.message);
  }
  KDN_ASSIGN_OR_RETURN(Document doc, Parse(body));
  if (doc.nodes[0].name != "CompleteMultipartUploadResult") {
    return Bad("unexpected answer to CompleteMultipartUpload: " + doc.nodes[0].name);
  }
  return Status::OK();
}

std::string Escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

}  // namespace kdn::origin::xml
