// ssmx/io/torch_checkpoint.h — state dicts from PyTorch `torch.save` files (pytorch_model.bin, .pth, .pt).
//
// Since PyTorch 1.6 torch.save writes a ZIP archive: <prefix>/data.pkl is a pickle of the saved object in which
// each tensor is a call of torch._utils._rebuild_tensor_v2 whose storage is a persistent id
// ('storage', torch.FloatStorage, '<key>', '<location>', numel), and <prefix>/data/<key> holds that storage's raw
// little-endian bytes. This loader reads the pickle with ssmx's data-only pickle machine (io/pickle.h: nothing is
// imported or executed, unknown globals are refused by name) and hands each tensor out as a RawTensor pointing into
// the memory-mapped file. It refuses legacy (pre-1.6, non-zip) files, big-endian checkpoints, compressed entries,
// complex dtypes, and tensors whose shape/stride/offset reach outside their storage.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mapped_file.h"
#include "io/raw_tensor.h"

namespace ssmx {

// Loads the state dict of a torch.save zip file. `key` empty: the top-level object must be a dict of tensors (HF
// pytorch_model.bin), or else, automatically, a dict holding one of "model", "state_dict", "model_state_dict",
// "module" whose value is a dict of tensors (Vim .pth). Non-empty key: use that entry.
// Tensors are returned as RawTensor over the memory-mapped file (keep_alive set), with shape/strides/offset from
// _rebuild_tensor_v2, storage dtype from the storage global, storage bytes = the zip entry <prefix>/data/<key>; two
// tensors naming the same storage key share it. Entries named in the dict that are not tensors are skipped (not an
// error). byteorder "big" → error "big-endian checkpoints are not supported". Legacy (pre-1.6 non-zip) torch files
// → error "legacy (non-zip) torch format is not supported; re-save with torch>=1.6".
std::vector<std::pair<std::string, RawTensor>> load_torch_state_dict(const std::string& path, const std::string& key = "");
// Same over an existing mapping (fuzzer, tests).
std::vector<std::pair<std::string, RawTensor>> load_torch_state_dict(std::shared_ptr<MappedFile> file, const std::string& key = "");
// Top-level keys of the checkpoint's dict and a short type description of each (for `ssmx info` on a .pth): e.g.
// {"model":"dict(312 tensors)","optimizer":"dict","args":"argparse.Namespace","epoch":"int"}. When the top-level
// object is not a dict, one pair ("", its description) is returned.
std::vector<std::pair<std::string, std::string>> describe_torch_checkpoint(const std::string& path);

}  // namespace ssmx
