#include "worker/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/io/atomic_file.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host"
#endif

namespace qwha::io {
namespace {

using Json = nlohmann::json;

constexpr char kMetadataKey[] = "__metadata__";

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {torch::kFloat64, "F64"},   {torch::kFloat32, "F32"}, {torch::kFloat16, "F16"},
    {torch::kBFloat16, "BF16"}, {torch::kInt64, "I64"},   {torch::kInt32, "I32"},
    {torch::kInt16, "I16"},     {torch::kInt8, "I8"},     {torch::kUInt8, "U8"},
    {torch::kBool, "BOOL"},
};

const char* DtypeToName(torch::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return d.name;
  }
  return nullptr;
}

bool NameToDtype(const std::string& name, torch::ScalarType* t) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *t = d.type;
      return true;
    }
  }
  return false;
}

void PutU64LE(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64LE(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Read-only mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr && size_ > 0) ::munmap(data_, size_);
  }

  absl::Status Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Error(errno, "open", path);
    struct stat sb;
    if (::fstat(fd, &sb) != 0) {
      int err = errno;
      ::close(fd);
      return Error(err, "stat", path);
    }
    if (!S_ISREG(sb.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat("safetensors ", path, ": not a regular file"));
    }
    size_ = static_cast<size_t>(sb.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        size_ = 0;
        return Error(err, "mmap", path);
      }
      data_ = p;
    }
    ::close(fd);
    return absl::OkStatus();
  }

  const unsigned char* data() const { return static_cast<const unsigned char*>(data_); }
  size_t size() const { return size_; }

 private:
  static absl::Status Error(int err, const char* what, const std::string& path) {
    std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InternalError(msg);
  }

  void* data_ = nullptr;
  size_t size_ = 0;
};

// A validated header entry.
struct Entry {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors ", path, ": ", what));
}

absl::Status ParseEntry(const std::string& path, const std::string& name, const Json& v,
                        uint64_t buffer_size, Entry* e) {
  const std::string where = absl::StrCat("tensor '", name, "': ");
  if (!v.is_object()) return Invalid(path, where + "entry is not a JSON object");
  e->name = name;

  auto dt = v.find("dtype");
  if (dt == v.end()) return Invalid(path, where + "missing \"dtype\"");
  if (!dt->is_string()) return Invalid(path, where + "\"dtype\" is not a string");
  if (!NameToDtype(dt->get<std::string>(), &e->dtype)) {
    return Invalid(path, where + "unknown dtype \"" + dt->get<std::string>() + "\"");
  }

  auto sh = v.find("shape");
  if (sh == v.end()) return Invalid(path, where + "missing \"shape\"");
  if (!sh->is_array()) return Invalid(path, where + "\"shape\" is not an array");
  uint64_t numel = 1;
  for (const Json& d : *sh) {
    if (!d.is_number_integer()) return Invalid(path, where + "\"shape\" entry is not an integer");
    if (!d.is_number_unsigned() && d.get<int64_t>() < 0) {
      return Invalid(path, where + "\"shape\" entry is negative");
    }
    uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel)) {
      return Invalid(path, where + "\"shape\" is too large");
    }
    e->shape.push_back(static_cast<int64_t>(dim));
  }

  auto off = v.find("data_offsets");
  if (off == v.end()) return Invalid(path, where + "missing \"data_offsets\"");
  if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_integer() ||
      !(*off)[1].is_number_integer()) {
    return Invalid(path, where + "\"data_offsets\" is not [begin, end] of integers");
  }
  for (const Json& o : *off) {
    if (!o.is_number_unsigned() && o.get<int64_t>() < 0) {
      return Invalid(path, where + "\"data_offsets\" entry is negative");
    }
  }
  e->begin = (*off)[0].get<uint64_t>();
  e->end = (*off)[1].get<uint64_t>();
  if (e->begin > e->end) {
    return Invalid(path, absl::StrCat(where, "data_offsets begin ", e->begin, " > end ", e->end));
  }
  if (e->end > buffer_size) {
    return Invalid(path, absl::StrCat(where, "data_offsets end ", e->end,
                                      " is past the data buffer of ", buffer_size, " bytes"));
  }
  uint64_t nbytes;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e->dtype)), &nbytes) ||
      nbytes != e->end - e->begin) {
    return Invalid(path, absl::StrCat(where, "data_offsets span ", e->end - e->begin,
                                      " bytes but shape and dtype need ", numel, " x ",
                                      c10::elementSize(e->dtype)));
  }
  return absl::OkStatus();
}

absl::Status ParseMetadata(const std::string& path, const Json& v,
                           std::map<std::string, std::string>* metadata) {
  if (!v.is_object()) return Invalid(path, "\"__metadata__\" is not a JSON object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_string()) {
      return Invalid(path, "\"__metadata__\" value for '" + it.key() + "' is not a string");
    }
    (*metadata)[it.key()] = it.value().get<std::string>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, torch::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> cpu;
  cpu.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    const std::string where = absl::StrCat("write safetensors ", path, ": tensor '", name, "': ");
    if (name == kMetadataKey) return absl::InvalidArgumentError(where + "reserved name");
    if (!t.defined()) return absl::InvalidArgumentError(where + "undefined tensor");
    if (DtypeToName(t.scalar_type()) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "unsupported dtype ", c10::toString(t.scalar_type())));
    }
    try {
      cpu.emplace_back(name, t.detach().to(torch::kCPU).contiguous());
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat(where, "copy to CPU failed: ", e.what_without_backtrace()));
    }
  }
  // Widest element first (stable on name): back-to-back tensors stay aligned.
  std::stable_sort(cpu.begin(), cpu.end(), [](const auto& a, const auto& b) {
    return a.second.element_size() > b.second.element_size();
  });

  Json header = Json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : cpu) {
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", DtypeToName(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string json;
  try {
    json = header.dump();               // nlohmann objects are key-sorted
  } catch (const Json::exception& e) {  // invalid UTF-8 in a name or value
    return absl::InvalidArgumentError(absl::StrCat("write safetensors ", path, ": ", e.what()));
  }
  json.append((8 - (json.size() % 8)) % 8, ' ');

  std::string file;
  file.reserve(8 + json.size() + offset);
  PutU64LE(json.size(), &file);
  file += json;
  for (const auto& [name, t] : cpu) {
    file.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return WriteFileAtomically(path, file);
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  MappedFile file;
  if (absl::Status st = file.Open(path); !st.ok()) return st;
  if (file.size() < 8) {
    return Invalid(path, absl::StrCat("file of ", file.size(),
                                      " bytes is shorter than the 8-byte header length"));
  }
  const uint64_t header_len = GetU64LE(file.data());
  if (header_len > file.size() - 8) {
    return Invalid(path, absl::StrCat("header length ", header_len, " is larger than the ",
                                      file.size() - 8, " bytes after the length field"));
  }
  const unsigned char* header_begin = file.data() + 8;
  const unsigned char* buffer = header_begin + header_len;
  const uint64_t buffer_size = file.size() - 8 - header_len;

  Json header;
  try {
    header = Json::parse(header_begin, buffer);
  } catch (const Json::exception& e) {
    return Invalid(path, absl::StrCat("header JSON: ", e.what()));
  }
  if (!header.is_object()) return Invalid(path, "header JSON is not an object");

  SafetensorsFile out;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (absl::Status st = ParseMetadata(path, it.value(), &out.metadata); !st.ok()) return st;
      continue;
    }
    Entry e;
    if (absl::Status st = ParseEntry(path, it.key(), it.value(), buffer_size, &e); !st.ok()) {
      return st;
    }
    entries.push_back(std::move(e));
  }

  // Overlap check over non-empty tensors sorted by begin.
  std::vector<const Entry*> by_begin;
  for (const Entry& e : entries) {
    if (e.end > e.begin) by_begin.push_back(&e);
  }
  std::sort(by_begin.begin(), by_begin.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    if (by_begin[i]->begin < by_begin[i - 1]->end) {
      return Invalid(path, absl::StrCat("tensor '", by_begin[i]->name, "' overlaps tensor '",
                                        by_begin[i - 1]->name, "' in the data buffer"));
    }
  }

  for (const Entry& e : entries) {
    const unsigned char* src = buffer + e.begin;
    const size_t nbytes = e.end - e.begin;
    if (e.dtype == torch::kBool &&
        std::any_of(src, src + nbytes, [](unsigned char b) { return b > 1; })) {
      return Invalid(path, "tensor '" + e.name + "': BOOL byte other than 0 or 1");
    }
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (nbytes > 0) std::memcpy(t.data_ptr(), src, nbytes);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

}  // namespace qwha::io
