#pragma once
// The output folder one compare_norms run owns: claimed (locked, checked, cleared of our own
// earlier files on --overwrite, run.json recorded) before any work.
#include <nlohmann/json.hpp>
#include <string>

namespace compare {

// Makes --out ready for one run before any work: creates it, locks it against a second
// concurrent run, removes temporaries a killed run left (named *.normlab-tmp), refuses a folder
// that holds another run's results unless overwrite (then removes those, and only those: files
// whose names compare_norms writes) or resume, and checks that it is writable. Throws naming the
// problem.
// With resume, the folder must hold a run (run.json) of the same configuration, and its results
// are kept. Otherwise writes run.json with config.
void claim_out_dir(const std::string& dir, bool overwrite, bool resume, const nlohmann::json& config);
// The first field that differs between a recorded and a current configuration, as
// "--epochs: was 20, now 10"; "" when equal.
// Keys in `optional` that a saved config lacks count as equal when now has the given value: flags
// added after the study was started, at the value that version used implicitly.
std::string first_config_difference(const nlohmann::json& saved, const nlohmann::json& now,
                                    const nlohmann::json& optional = nlohmann::json::object());
// Whether a file name in --out is one compare_norms writes (metrics.csv, curves_bn.dat, ...).
bool is_own_output(const std::string& name);

}  // namespace compare
