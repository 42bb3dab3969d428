// ssmx/io/imagenet.h — the data of the vision evaluations: ImageNet validation lists and ImageNet-Segmentation.
//
// ImageNet validation (docs/vision-eval.md):
//   folder layout  ROOT/<wnid>/*.JPEG (torchvision ImageFolder): classes are the subfolder names sorted by byte
//                  order, label = index in that order; files sorted by name inside each class; the list is class by
//                  class. Only regular files with an image extension (.jpeg .jpg .png, any case) count.
//   flat layout    DIR/*.JPEG sorted by name + a labels file: either one integer per line (the i-th line labels the
//                  i-th file; ILSVRC2012_validation_ground_truth.txt style), or a CSV with a header line and rows
//                  `file,label`. Labels are read as given (label_offset is added; −1 for the devkit's 1-based IDs —
//                  note the devkit's ILSVRC2012_ID order is not the sorted-wnid order of torchvision models).
// ImageNet-Segmentation (gtsegs_ijcv.mat, MATLAB v7.3 = HDF5): /value/img and /value/gt are N×1 datasets of object
// references; img{i} is a uint8 array stored (3, W, H) (MATLAB's column-major H×W×3), gt{i} a 1×1 cell (a reference
// dataset) whose element is the mask stored (W, H). Read through the HDF5 C library.
// Every malformed input throws ssmx::Error(path, reason).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rgb_image.h"

namespace ssmx {

struct LabeledImage {
  std::string path;
  int label = 0;
};

struct ImagenetFolder {
  std::vector<std::string> classes;  // wnids, sorted
  std::vector<LabeledImage> images;
};

// ROOT/<wnid>/*.JPEG; throws when ROOT is missing, has no class folders, or a class folder holds no image.
ImagenetFolder read_imagenet_folder(const std::string& root);

// DIR/*.JPEG + labels (.txt one integer a line, or .csv `file,label` with a header). The counts must match (text
// form) or every CSV row must name an existing file and every file must have a row (CSV form).
std::vector<LabeledImage> read_imagenet_flat(const std::string& dir, const std::string& labels_path,
                                             int label_offset = 0);

struct SegmentationSample {
  Image image;                // RGB uint8 H×W
  std::vector<uint8_t> mask;  // H×W, row-major
};

class SegmentationDataset {
 public:
  explicit SegmentationDataset(const std::string& path);
  ~SegmentationDataset();
  SegmentationDataset(const SegmentationDataset&) = delete;
  SegmentationDataset& operator=(const SegmentationDataset&) = delete;

  int64_t size() const;
  Image image(int64_t i) const;                 // RGB uint8, (h, w, 3)
  std::vector<uint8_t> mask(int64_t i) const;   // H×W; mask_shape gives H, W
  SegmentationSample sample(int64_t i) const;   // both, checked to have the same size
  std::pair<int, int> mask_shape(int64_t i) const;  // {h, w}

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssmx
