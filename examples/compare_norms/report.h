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
