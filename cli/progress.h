// A one-line progress bar with ETA on stderr, drawn only when stderr is a terminal (or --verbose asks for it).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace ssmx::cli {

class Progress {
 public:
  Progress(std::string what, int64_t total, bool force = false)
      : what_(std::move(what)), total_(total), on_(force || isatty(2)), t0_(std::chrono::steady_clock::now()) {
    draw();
  }
  ~Progress() { done(); }
  void step(int64_t n = 1) {
    cur_ += n;
    draw();
  }
  void done() {
    if (on_ && !finished_) std::fprintf(stderr, "\n");
    finished_ = true;
  }

 private:
  void draw() {
    if (!on_ || finished_) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const int width = 30, fill = total_ > 0 ? int(width * cur_ / total_) : width;
    std::string bar(size_t(fill), '=');
    if (fill < width) bar += '>' + std::string(size_t(width - fill - 1), ' ');
    char eta[32] = "";
    if (cur_ > 0 && cur_ < total_) std::snprintf(eta, sizeof eta, " ETA %.0fs", el / double(cur_) * double(total_ - cur_));
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %.1fs%s   ", what_.c_str(), bar.c_str(), (long long)cur_, (long long)total_, el, eta);
    std::fflush(stderr);
  }
  std::string what_;
  int64_t total_, cur_ = 0;
  bool on_, finished_ = false;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace ssmx::cli
