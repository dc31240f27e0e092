#pragma once
// Everything compare_norms writes to --out: metrics.csv, results.json, gnuplot data + scripts and
// the PNG/SVG they render (curves, misclassified grids, confusion matrices), and report.md.
// Every file is written to a temporary name and renamed into place, so an interrupted run never
// leaves a half-written file.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer.h"

namespace compare {

struct ReportInput {
  std::string out_dir;
  const nl::data::Dataset* data = nullptr;
  std::vector<RunResult> runs;
  nlohmann::json config;  // echoed into results.json and report.md
};

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
// Runs argv (argv[0] looked up on PATH) without a shell, in dir when not empty, stdin from
// /dev/null, stdout and stderr into log (relative to dir); returns the exit status, -1 when the
// program could not be started.
int run_program(const std::vector<std::string>& argv, const std::string& dir, const std::string& log);

// gnuplot string literal for any text: single quotes (no backtick substitution, macros or
// escapes inside), an embedded ' doubled, control characters as spaces. Print with noenhanced.
std::string gp_quote(const std::string& s);

// Mean and sample standard deviation (0 for one value).
std::pair<double, double> mean_std(const std::vector<double>& v);

void write_metrics_csv(const ReportInput& in);
nlohmann::json write_results_json(const ReportInput& in);
// Returns true when gnuplot rendered the pictures; otherwise says why once on stderr and leaves
// the data files and scripts for later rendering.
bool write_plots(const ReportInput& in);
void write_report_md(const ReportInput& in, const nlohmann::json& results, bool have_pictures);

}  // namespace compare
