#pragma once
// What report.cpp and plots.cpp share: the runs of a report grouped by norm, paths in --out,
// number formatting, the plot colours. Internal to compare_norms' report.
#include <string>
#include <vector>

#include "report.h"

namespace compare::detail {

// The norms of the report's runs, in the order they first appear.
std::vector<NormRef> norms_in(const ReportInput& in);
std::vector<const RunResult*> runs_of(const ReportInput& in, NormRef k);
// The first run of the list that finished (not diverged, not interrupted), or null.
const RunResult* first_ok(const std::vector<const RunResult*>& runs);
std::string path_in(const ReportInput& in, const std::string& name);
std::string fmt(double v, int digits);
// Whether some epoch has telemetry (the effective-lr chart) and some a BatchNorm train/eval gap
// (the gap chart): gnuplot refuses a chart whose every point is undefined (--no-telemetry, or no
// norm with running statistics), so such a chart is neither drawn nor linked.
bool any_telemetry(const ReportInput& in);
bool any_bn_gap(const ReportInput& in);

// Ten distinguishable colours (matplotlib's tab10): the family's nine norms each get their own.
inline constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
inline constexpr size_t kNumColors = sizeof kColors / sizeof kColors[0];

}  // namespace compare::detail
