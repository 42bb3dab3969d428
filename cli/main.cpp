// ssmx — command-line front end of the ssmx library.
//
//   ssmx [--threads N] [--verbose] SUBCOMMAND ...     (ssmx SUBCOMMAND --help for each)
//
// Exit codes: 0 success; 1 usage error (bad or missing options); 2 bad input (a file, an id, a size: the one-line
// message names it); 3 internal error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>

#include "common.h"
#include "core/error.h"
#include "core/large_pages.h"
#include "core/runtime.h"

int main(int argc, char** argv) {
  ssmx::ensure_blas_core(argc, argv);
  ssmx::install_large_page_allocator();
  CLI::App app{"ssmx — hidden attention and relevance for Mamba-family models, on the CPU", "ssmx"};
  app.require_subcommand(1);
  app.fallthrough();
  ssmx::cli::Globals g;
  app.add_option("-t,--threads", g.threads, "Threads for kernels and BLAS (default: all cores)")->check(CLI::Range(0, 1024));
  app.add_flag("-v,--verbose", g.verbose, "Print what ssmx does (BLAS core, threads, timings)");
  app.set_version_flag("--version", std::string("ssmx ") + SSMX_VERSION);

  ssmx::cli::register_info(app, g);
  ssmx::cli::register_tokenize(app, g);
  ssmx::cli::register_predict(app, g);
  ssmx::cli::register_attention(app, g);
  ssmx::cli::register_explain(app, g);
  ssmx::cli::register_eval(app, g);
  ssmx::cli::register_eval_randomization(app, g);
  ssmx::cli::register_eval_vision(app, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  } catch (const ssmx::Error& e) {
    std::fprintf(stderr, "ssmx: error: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "ssmx: error: out of memory\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ssmx: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
