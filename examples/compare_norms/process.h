#pragma once
// Starting another program without a shell (gnuplot for the pictures, compare_norms for a study).
#include <string>
#include <vector>

namespace compare {

// Runs argv (argv[0] looked up on PATH) without a shell, in dir when not empty, stdin from
// /dev/null, stdout and stderr into log (relative to dir); returns the exit status, -1 when the
// program could not be started.
int run_program(const std::vector<std::string>& argv, const std::string& dir, const std::string& log);

}  // namespace compare
