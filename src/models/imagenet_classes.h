// ssmx/models/imagenet_classes.h — the names of the 1000 ImageNet-1k classes (for printing predictions of image
// classifiers such as Vision Mamba).
#pragma once

#include <cstdint>
#include <string>

namespace ssmx {

// Short English name of ImageNet-1k class i in the standard index order (0 "tench", 1 "goldfish", …, 999 "toilet
// tissue"); "" when i is outside [0, 1000).
std::string imagenet_class_name(int64_t i);

}  // namespace ssmx
