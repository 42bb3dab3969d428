#include "io/imagenet.h"

#include <hdf5.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "core/error.h"

namespace fs = std::filesystem;

namespace ssmx {

// ---------------------------------------------------------------- ImageNet lists

namespace {

bool is_image_name(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e == ".jpeg" || e == ".jpg" || e == ".png";
}

std::vector<std::string> sorted_images(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec) && is_image_name(it->path())) names.push_back(it->path().filename().string());
  if (ec) throw Error(dir.string(), "cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

bool parse_int(const std::string& s, int& v) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  return ec == std::errc() && p == end;
}

}  // namespace

ImagenetFolder read_imagenet_folder(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw Error(root, "not a directory");
  ImagenetFolder out;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) out.classes.push_back(it->path().filename().string());
  if (ec) throw Error(root, "cannot list: " + ec.message());
  if (out.classes.empty()) throw Error(root, "no class folders (expected ROOT/<wnid>/*.JPEG)");
  std::sort(out.classes.begin(), out.classes.end());
  for (size_t c = 0; c < out.classes.size(); ++c) {
    const fs::path dir = fs::path(root) / out.classes[c];
    const auto names = sorted_images(dir);
    if (names.empty()) throw Error(dir.string(), "class folder holds no image");
    for (const auto& n : names) out.images.push_back({(dir / n).string(), int(c)});
  }
  return out;
}

std::vector<LabeledImage> read_imagenet_flat(const std::string& dir, const std::string& labels_path,
                                             int label_offset) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir, "not a directory");
  const auto names = sorted_images(dir);
  if (names.empty()) throw Error(dir, "no images");
  std::ifstream f(labels_path);
  if (!f) throw Error(labels_path, "cannot open");
  std::vector<LabeledImage> out;
  std::string line;
  int64_t n = 0;
  const bool csv = fs::path(labels_path).extension() == ".csv";
  if (!csv) {
    std::vector<int> labels;
    while (std::getline(f, line)) {
      ++n;
      const std::string t = trim(line);
      if (t.empty()) continue;
      int v = 0;
      if (!parse_int(t, v)) throw Error(labels_path + ":" + std::to_string(n), "not an integer label: '" + t + "'");
      labels.push_back(v + label_offset);
    }
    if (labels.size() != names.size())
      throw Error(labels_path, std::to_string(labels.size()) + " labels for " + std::to_string(names.size()) +
                                   " images in " + dir);
    for (size_t i = 0; i < names.size(); ++i) out.push_back({(fs::path(dir) / names[i]).string(), labels[i]});
  } else {
    std::map<std::string, int> by_name;
    while (std::getline(f, line)) {
      ++n;
      const std::string t = trim(line);
      if (t.empty()) continue;
      const std::string where = labels_path + ":" + std::to_string(n);
      const size_t comma = t.find(',');
      if (comma == std::string::npos || t.find(',', comma + 1) != std::string::npos)
        throw Error(where, "expected 'file,label'");
      const std::string file = trim(t.substr(0, comma)), lab = trim(t.substr(comma + 1));
      int v = 0;
      if (!parse_int(lab, v)) {
        if (n == 1) continue;  // header
        throw Error(where, "not an integer label: '" + lab + "'");
      }
      if (!by_name.emplace(file, v + label_offset).second) throw Error(where, "file '" + file + "' listed twice");
    }
    for (const auto& nm : names) {
      auto it = by_name.find(nm);
      if (it == by_name.end()) throw Error(labels_path, "no label for " + nm);
      out.push_back({(fs::path(dir) / nm).string(), it->second});
      by_name.erase(it);
    }
    if (!by_name.empty()) throw Error(labels_path, "label for a missing image: " + by_name.begin()->first);
  }
  return out;
}

// ---------------------------------------------------------------- gtsegs_ijcv.mat through HDF5

namespace {

// The HDF5 library is not built thread-safe on Debian (serial); serialise every call.
std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

struct H5Id {
  hid_t id = H5I_INVALID_HID;
  H5Id() = default;
  explicit H5Id(hid_t i) : id(i) {}
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& o) noexcept : id(o.id) { o.id = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&& o) noexcept {
    std::swap(id, o.id);
    return *this;
  }
  ~H5Id() {
    if (id >= 0) H5Idec_ref(id);
  }
  bool ok() const { return id >= 0; }
};

constexpr int64_t kMaxSide = 1 << 15;

std::vector<hsize_t> dims_of(hid_t dset) {
  H5Id space(H5Dget_space(dset));
  if (!space.ok()) return {};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  if (rank <= 0 || rank > 8) return {};
  std::vector<hsize_t> d(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.id, d.data(), nullptr);
  return d;
}

}  // namespace

struct SegmentationDataset::Impl {
  std::string path;
  H5Id file;
  std::vector<hobj_ref_t> img_refs, gt_refs;

  std::string where(int64_t i, const char* what) const {
    return path + " (" + what + " " + std::to_string(i) + ")";
  }

  std::vector<hobj_ref_t> read_refs(const char* name) {
    H5Id d(H5Dopen2(file.id, name, H5P_DEFAULT));
    if (!d.ok()) throw Error(path, std::string("no dataset ") + name + " (not an ImageNet-Segmentation gtsegs_ijcv.mat)");
    return read_ref_dataset(d.id, path + " " + name);
  }

  static std::vector<hobj_ref_t> read_ref_dataset(hid_t d, const std::string& where) {
    H5Id type(H5Dget_type(d));
    if (!type.ok() || H5Tget_class(type.id) != H5T_REFERENCE || H5Tequal(type.id, H5T_STD_REF_OBJ) <= 0)
      throw Error(where, "not a dataset of object references (a MATLAB cell array)");
    const auto dims = dims_of(d);
    if (dims.size() != 2) throw Error(where, "expected a 2-D cell array");
    const hsize_t n = dims[0] * dims[1];
    if (n == 0 || n > (1u << 24)) throw Error(where, "cell array of " + std::to_string(n) + " elements");
    std::vector<hobj_ref_t> refs(n);
    if (H5Dread(d, H5T_STD_REF_OBJ, H5S_ALL, H5S_ALL, H5P_DEFAULT, refs.data()) < 0)
      throw Error(where, "cannot read the references (truncated file?)");
    return refs;
  }

  H5Id deref(const hobj_ref_t& r, const std::string& where) const {
    H5Id obj(H5Rdereference2(file.id, H5P_DEFAULT, H5R_OBJECT, &r));
    if (!obj.ok() || H5Iget_type(obj.id) != H5I_DATASET) throw Error(where, "reference does not lead to a dataset");
    return obj;
  }

  // Reads an integer (or floating, non-zero → 1) array as uint8 after checking the element count.
  static std::vector<uint8_t> read_u8(hid_t d, const std::vector<hsize_t>& dims, const std::string& where) {
    hsize_t n = 1;
    for (hsize_t x : dims) {
      if (x == 0 || x > hsize_t(kMaxSide)) throw Error(where, "array dimension " + std::to_string(x));
      n *= x;
    }
    H5Id type(H5Dget_type(d));
    const H5T_class_t cls = type.ok() ? H5Tget_class(type.id) : H5T_NO_CLASS;
    std::vector<uint8_t> out(n);
    if (cls == H5T_INTEGER) {
      if (H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
        throw Error(where, "cannot read the array (truncated file?)");
    } else if (cls == H5T_FLOAT) {
      std::vector<double> tmp(n);
      if (H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp.data()) < 0)
        throw Error(where, "cannot read the array (truncated file?)");
      for (hsize_t i = 0; i < n; ++i) out[i] = tmp[i] != 0.0;
    } else {
      throw Error(where, "array is neither integer nor floating point");
    }
    return out;
  }

  Image image(int64_t i) const {
    const std::string w = where(i, "image");
    H5Id d = deref(img_refs[size_t(i)], w);
    const auto dims = dims_of(d.id);
    if (dims.size() != 3 || dims[0] != 3) throw Error(w, "expected a uint8 array stored (3, W, H)");
    const auto raw = read_u8(d.id, dims, w);
    const int64_t W = int64_t(dims[1]), H = int64_t(dims[2]);
    Image img;
    img.w = int(W);
    img.h = int(H);
    img.px.resize(size_t(W * H * 3));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t y = 0; y < H; ++y) img.px[size_t((y * W + x) * 3 + c)] = raw[size_t((c * W + x) * H + y)];
    return img;
  }

  std::vector<uint8_t> mask(int64_t i, int& h, int& w_out) const {
    const std::string w = where(i, "mask");
    H5Id cell = deref(gt_refs[size_t(i)], w);
    const auto inner = read_ref_dataset(cell.id, w);
    H5Id d = deref(inner[0], w);
    const auto dims = dims_of(d.id);
    if (dims.size() != 2) throw Error(w, "expected a 2-D mask stored (W, H)");
    const auto raw = read_u8(d.id, dims, w);
    const int64_t W = int64_t(dims[0]), H = int64_t(dims[1]);
    std::vector<uint8_t> m(static_cast<size_t>(W * H));
    for (int64_t x = 0; x < W; ++x)
      for (int64_t y = 0; y < H; ++y) m[size_t(y * W + x)] = raw[size_t(x * H + y)];
    h = int(H);
    w_out = int(W);
    return m;
  }
};

SegmentationDataset::SegmentationDataset(const std::string& path) : impl_(std::make_unique<Impl>()) {
  std::lock_guard<std::mutex> lock(h5_mutex());
  impl_->path = path;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors are reported as ssmx::Error, not printed by the library
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path, "not a file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path, "not an HDF5 (MATLAB v7.3) file");
  impl_->file = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!impl_->file.ok()) throw Error(path, "cannot open as HDF5 (truncated or damaged file?)");
  impl_->img_refs = impl_->read_refs("/value/img");
  impl_->gt_refs = impl_->read_refs("/value/gt");
  if (impl_->img_refs.size() != impl_->gt_refs.size())
    throw Error(path, std::to_string(impl_->img_refs.size()) + " images but " + std::to_string(impl_->gt_refs.size()) +
                          " masks");
}

SegmentationDataset::~SegmentationDataset() {
  std::lock_guard<std::mutex> lock(h5_mutex());
  impl_.reset();
}

int64_t SegmentationDataset::size() const { return int64_t(impl_->img_refs.size()); }

static void check_index(const std::string& path, int64_t i, int64_t n) {
  if (i < 0 || i >= n) throw Error(path, "index " + std::to_string(i) + " outside [0, " + std::to_string(n) + ")");
}

Image SegmentationDataset::image(int64_t i) const {
  check_index(impl_->path, i, size());
  std::lock_guard<std::mutex> lock(h5_mutex());
  return impl_->image(i);
}

std::vector<uint8_t> SegmentationDataset::mask(int64_t i) const {
  check_index(impl_->path, i, size());
  std::lock_guard<std::mutex> lock(h5_mutex());
  int h = 0, w = 0;
  return impl_->mask(i, h, w);
}

std::pair<int, int> SegmentationDataset::mask_shape(int64_t i) const {
  check_index(impl_->path, i, size());
  std::lock_guard<std::mutex> lock(h5_mutex());
  int h = 0, w = 0;
  impl_->mask(i, h, w);
  return {h, w};
}

SegmentationSample SegmentationDataset::sample(int64_t i) const {
  check_index(impl_->path, i, size());
  std::lock_guard<std::mutex> lock(h5_mutex());
  SegmentationSample s;
  s.image = impl_->image(i);
  int h = 0, w = 0;
  s.mask = impl_->mask(i, h, w);
  if (h != s.image.h || w != s.image.w)
    throw Error(impl_->where(i, "sample"), "mask is " + std::to_string(h) + "x" + std::to_string(w) + ", image " +
                                               std::to_string(s.image.h) + "x" + std::to_string(s.image.w));
  return s;
}

}  // namespace ssmx
