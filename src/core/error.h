// ssmx/core/error.h — the one error type of the library.
//
// Every failure the user can cause (a bad file, a bad option) is reported as ssmx::Error with a message of the
// form "WHERE: what is wrong". The CLI prints it on one line and exits with code 2. Library code never calls
// exit() or abort() on bad input.
#pragma once

#include <stdexcept>
#include <string>

namespace ssmx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
  // "WHERE: reason", where WHERE is usually a file path.
  Error(const std::string& where, const std::string& reason) : std::runtime_error(where + ": " + reason) {}
};

}  // namespace ssmx
