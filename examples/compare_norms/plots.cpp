#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "normlab/nn/atomic_file.h"
#include "process.h"
#include "report.h"
#include "report_detail.h"

namespace compare {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace detail;

// gnuplot string literal for any text (class names come from the data set's batches.meta.txt):
// single quotes, inside which gnuplot performs no backtick command substitution, no macro
// expansion and no backslash escapes; an embedded ' is doubled, and control characters (a line
// break would end the command) become spaces. Print it with `noenhanced`, so ^ _ { } @ & ~ stay
// literal too.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "''";
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      out += ' ';
    else
      out += c;
  }
  return out + "'";
}

bool write_plots(const ReportInput& in) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  std::vector<NormRef> curved, pictured;  // norms with a curve / with a finished run
  // Per norm key, the (true, predicted) captions of the misclassified grid, in panel order.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> captions;
  // --- data files ---
  for (NormRef k : norms) {
    auto runs = runs_of(in, k);
    std::ostringstream os;
    os << "# epoch train_loss train_acc test_loss test_acc test_acc_std eff_lr bn_gap out_std loss_spikes "
          "(means over "
       << runs.size() << " seed(s); eff_lr and out_std also over the norm layers; NaN: no telemetry)\n";
    size_t epochs = 0;
    for (const RunResult* r : runs) epochs = std::max(epochs, r->epochs.size());
    if (epochs > 0) curved.push_back(k);
    // A diverged run's curve stops at its last finished epoch: later points average the others.
    for (size_t e = 0; e < epochs; ++e) {
      std::vector<double> tl, ta, vl, va, lr, gap, ostd, spikes;
      for (const RunResult* r : runs) {
        if (e >= r->epochs.size()) continue;
        tl.push_back(r->epochs[e].train_loss), ta.push_back(r->epochs[e].train_acc);
        vl.push_back(r->epochs[e].test_loss), va.push_back(r->epochs[e].test_acc);
        const json& t = r->epochs[e].telemetry;
        if (t.is_null()) continue;
        std::vector<double> l, o;
        for (const json& layer : t["layers"]) {
          l.push_back(layer.value("eff_lr", 0.0));
          if (layer.contains("out_std")) o.push_back(layer["out_std"].get<double>());
        }
        if (!l.empty()) lr.push_back(mean_std(l).first);
        if (!o.empty()) ostd.push_back(mean_std(o).first);
        if (t["bn_gap"].is_number()) gap.push_back(t["bn_gap"].get<double>());
        spikes.push_back(double(t.value("loss_spikes", int64_t(0))));
      }
      auto m = [](const std::vector<double>& v) {
        return v.empty() ? std::string("NaN") : fmt(mean_std(v).first, 8);
      };
      os << e + 1 << ' ' << mean_std(tl).first << ' ' << mean_std(ta).first << ' ' << mean_std(vl).first
         << ' ' << mean_std(va).first << ' ' << mean_std(va).second << ' ' << m(lr) << ' ' << m(gap) << ' '
         << m(ostd) << ' ' << m(spikes) << '\n';
    }
    nl::nn::write_file_atomic(path_in(in, "curves_" + norm_key(k) + ".dat"), os.str());

    // Misclassified test images of the first finished seed: "x y r g b" blocks, one per image.
    const RunResult* ok = first_ok(runs);
    if (!ok) continue;  // every seed diverged: no predictions to show
    pictured.push_back(k);
    const RunResult& r = *ok;
    std::ostringstream img, cap;
    int shown = 0;
    for (int64_t i = 0; i < d.test.N && shown < 10; ++i) {
      const int32_t truth = d.test.labels[static_cast<size_t>(i)];
      const int32_t pred = r.test_predictions[static_cast<size_t>(i)];
      if (truth == pred) continue;
      const uint8_t* p = d.test.image(i);
      const int64_t HW = d.test.H * d.test.W;
      for (int64_t y = 0; y < d.test.H; ++y) {
        for (int64_t x = 0; x < d.test.W; ++x) {
          int v[3];
          for (int c = 0; c < 3; ++c) v[c] = p[(d.test.C == 3 ? c : 0) * HW + y * d.test.W + x];
          img << x << ' ' << y << ' ' << v[0] << ' ' << v[1] << ' ' << v[2] << '\n';
        }
        img << '\n';
      }
      img << "\n";
      cap << "test #" << i << "|true: " << d.classes[truth] << "|pred: " << d.classes[pred] << '\n';
      captions[norm_key(k)].emplace_back("true: " + d.classes[truth], "pred: " + d.classes[pred]);
      ++shown;
    }
    nl::nn::write_file_atomic(path_in(in, "misclassified_" + norm_key(k) + ".dat"), img.str());
    nl::nn::write_file_atomic(path_in(in, "misclassified_" + norm_key(k) + ".txt"), cap.str());

    // Confusion matrix of the first seed: rows true class, columns predicted.
    const size_t C = d.classes.size();
    std::vector<int64_t> cm(C * C, 0);
    for (int64_t i = 0; i < d.test.N; ++i)
      ++cm[static_cast<size_t>(d.test.labels[i]) * C + static_cast<size_t>(r.test_predictions[i])];
    std::ostringstream cmo;
    for (size_t t = 0; t < C; ++t) {
      for (size_t p = 0; p < C; ++p) cmo << cm[t * C + p] << (p + 1 < C ? " " : "\n");
    }
    nl::nn::write_file_atomic(path_in(in, "confusion_" + norm_key(k) + ".dat"), cmo.str());
  }

  // --- scripts ---
  // Every picture is drawn into a temporary name of ours and renamed once gnuplot succeeded, so
  // a killed plot leaves no half-written PNG under a final name and no file of the user's is
  // ever renamed or removed.
  std::vector<std::pair<std::string, std::string>> outputs;  // (temporary, final), in out_dir
  auto output = [&](const std::string& name) {
    outputs.emplace_back(fs::path(nl::nn::temp_name_for(path_in(in, name))).filename().string(), name);
    return outputs.back().first;
  };
  std::ostringstream gp;
  gp << "# Renders the charts of this folder: gnuplot plots.gp (run inside the folder).\n"
     << "set encoding utf8\nset key outside right top box\nset grid\nset xlabel 'epoch'\n"
     << "set xtics 1\n";
  struct Chart {
    const char* name;
    const char* title;
    const char* ylabel;
    int column;
  };
  const std::string ds =
      d.name + " (" + std::to_string(d.train.N) + " train / " + std::to_string(d.test.N) + " test images)";
  // No curve at all when every run diverged in its first epoch: nothing to plot.
  std::vector<Chart> charts;
  if (!curved.empty()) {
    charts = {Chart{"train_loss", "Training loss", "loss (NLL)", 2},
              Chart{"test_loss", "Test loss", "loss (NLL)", 4},
              Chart{"test_accuracy", "Test accuracy", "accuracy (%)", 5}};
    if (any_telemetry(in))
      charts.push_back({"effective_lr",
                        "Effective learning rate lr/|w|^2 (mean over the convs before a norm)", "lr / |w|^2",
                        7});
    if (any_bn_gap(in))
      charts.push_back(
          {"bn_gap", "BatchNorm train/eval gap (test acc, batch minus running statistics)", "pp", 8});
  }
  for (Chart c : charts) {
    for (const char* term : {"png", "svg"}) {
      gp << (std::string(term) == "png" ? "set terminal pngcairo size 960,600 font 'Sans,11'\n"
                                        : "set terminal svg size 960,600 font 'Sans,11'\n");
      gp << "set output " << gp_quote(output(std::string(c.name) + "." + term)) << "\n";
      // Two lines: the longest title on one line ran past the picture's left edge.
      gp << "set title " << gp_quote(std::string(c.title) + " per epoch") << " . \"\\n\" . " << gp_quote(ds)
         << "\n";
      gp << (std::string(c.name) == "effective_lr" ? "set logscale y\nset format y '%.0e'\n"
                                                   : "unset logscale y\nset format y '%g'\n");
      gp << "set ylabel '" << c.ylabel << "'\nplot ";
      for (size_t i = 0; i < curved.size(); ++i) {
        gp << (i ? ", \\\n     " : "") << "'curves_" << norm_key(curved[i]) << ".dat' using 1:" << c.column
           << " with linespoints lw 2 pt 7 ps 0.6 lc rgb '" << kColors[i % kNumColors] << "' title '"
           << norm_title(curved[i]) << "'";
      }
      gp << "\nset output\n";
    }
  }
  gp << "reset\n";
  for (NormRef k : pictured) {
    const std::string key = norm_key(k);
    const auto& lines = captions[key];
    gp << "\n# misclassified test images, " << norm_title(k) << "\n"
       << "set terminal pngcairo size 1100,560 font 'Sans,10'\n"
       << "set output " << gp_quote(output("misclassified_" + key + ".png")) << "\n"
       << "set multiplot layout 2,5 title "
       << gp_quote(norm_title(k) + ": misclassified test images (first seed)") << "\n"
       << "unset key\nunset tics\nunset border\nset size ratio -1\n"
       << "set xrange [-0.5:" << d.test.W - 0.5 << "]\nset yrange [" << d.test.H - 0.5 << ":-0.5]\n";
    for (size_t i = 0; i < lines.size(); ++i) {
      // The two captions quoted and joined by a line break (gnuplot's "\n" is the script's only
      // double-quoted string, and it holds no input).
      gp << "set title " << gp_quote(lines[i].first) << " . \"\\n\" . " << gp_quote(lines[i].second)
         << " noenhanced\n"
         << "plot 'misclassified_" << key << ".dat' index " << i << " using 1:2:3:4:5 with rgbimage\n";
    }
    gp << "unset multiplot\nset output\nreset\n";
    // Confusion matrix with counts.
    gp << "set terminal pngcairo size 760,680 font 'Sans,10'\n"
       << "set output " << gp_quote(output("confusion_" + key + ".png")) << "\n"
       << "set title " << gp_quote(norm_title(k) + ": confusion matrix on the test set (first seed)") << "\n"
       << "unset key\nset xlabel 'predicted'\nset ylabel 'true'\nset palette defined (0 'white', 1 "
          "'#f28e2b')\n"
       << "set xrange [-0.5:" << d.classes.size() - 0.5 << "]\nset yrange [" << d.classes.size() - 0.5
       << ":-0.5]\n"
       << "set xtics rotate by 45 right (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ") noenhanced\nset ytics (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ") noenhanced\nplot 'confusion_" << key
       << ".dat' matrix with image, '' matrix using 1:2:(sprintf('%d', $3)) "
       << "with labels tc rgb 'black'\nset output\nreset\n";
  }
  nl::nn::write_file_atomic(path_in(in, "plots.gp"), gp.str());

  // The script that is kept names the final files, so that `gnuplot plots.gp` by hand works.
  std::string kept = gp.str();
  for (const auto& [tmp, name] : outputs) {
    for (size_t at = kept.find(tmp); at != std::string::npos; at = kept.find(tmp, at + name.size()))
      kept.replace(at, tmp.size(), name);
  }
  nl::nn::write_file_atomic(path_in(in, "plots.gp"), kept);
  const std::string run_script = nl::nn::temp_name_for(path_in(in, "plots.gp"));
  nl::nn::write_file_atomic(run_script, gp.str());
  auto remove_ours = [&] {
    std::error_code ec;
    fs::remove(run_script, ec);
    for (const auto& o : outputs) fs::remove(path_in(in, o.first), ec);
  };

  if (run_program({"gnuplot", "--version"}, "", "/dev/null") != 0) {
    remove_ours();
    std::fprintf(stderr,
                 "compare_norms: gnuplot not found, so no pictures were drawn; the data and the "
                 "script are in %s (install gnuplot-nox and run `gnuplot plots.gp` there)\n",
                 in.out_dir.c_str());
    return false;
  }
  // gnuplot runs in out_dir with the script's file name as its one argument: no shell, so no
  // character of --out (quotes, semicolons) is ever interpreted.
  const int status =
      run_program({"gnuplot", fs::path(run_script).filename().string()}, in.out_dir, "gnuplot.log");
  if (status != 0) {
    remove_ours();
    std::fprintf(stderr, "compare_norms: gnuplot failed (exit %d) on %s/plots.gp; see %s/gnuplot.log\n",
                 status, in.out_dir.c_str(), in.out_dir.c_str());
    return false;
  }
  std::error_code ec;
  fs::remove(run_script, ec);
  for (const auto& [tmp, name] : outputs) {
    fs::rename(path_in(in, tmp), path_in(in, name), ec);
    if (ec) {
      remove_ours();
      std::fprintf(stderr, "compare_norms: gnuplot did not write %s (%s); see %s/gnuplot.log\n", name.c_str(),
                   ec.message().c_str(), in.out_dir.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace compare
