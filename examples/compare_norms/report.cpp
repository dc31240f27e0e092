#include "report.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include "normlab/core/error.h"

namespace compare {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<NormKind> norms_in(const ReportInput& in) {
  std::vector<NormKind> out;
  for (const RunResult& r : in.runs) {
    bool seen = false;
    for (NormKind k : out) seen |= k == r.norm;
    if (!seen) out.push_back(r.norm);
  }
  return out;
}

std::vector<const RunResult*> runs_of(const ReportInput& in, NormKind k) {
  std::vector<const RunResult*> out;
  for (const RunResult& r : in.runs)
    if (r.norm == k) out.push_back(&r);
  return out;
}

std::string path_in(const ReportInput& in, const std::string& name) {
  return (fs::path(in.out_dir) / name).string();
}

std::string fmt(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// gnuplot string literal: single quotes, with embedded single quotes doubled.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c"};

}  // namespace

void write_text_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    NL_CHECK(out.good(), "cannot write ", tmp);
    out << content;
    out.flush();
    NL_CHECK(out.good(), "writing ", tmp, " failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    NL_FAIL("cannot move ", tmp, " to ", path);
  }
}

std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {0, 0};
  double m = 0;
  for (double x : v) m += x / double(v.size());
  if (v.size() < 2) return {m, 0};
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return {m, std::sqrt(s / double(v.size() - 1))};
}

void write_metrics_csv(const ReportInput& in) {
  std::ostringstream os;
  os << "norm,seed,epoch,train_loss,train_acc,test_loss,test_acc,seconds\n";
  for (const RunResult& r : in.runs)
    for (const EpochStats& e : r.epochs)
      os << norm_key(r.norm) << ',' << r.seed << ',' << e.epoch << ',' << fmt(e.train_loss, 6)
         << ',' << fmt(e.train_acc, 4) << ',' << fmt(e.test_loss, 6) << ',' << fmt(e.test_acc, 4)
         << ',' << fmt(e.seconds, 3) << '\n';
  write_text_atomic(path_in(in, "metrics.csv"), os.str());
}

json write_results_json(const ReportInput& in) {
  json j;
  j["config"] = in.config;
  j["dataset"] = {{"name", in.data->name},
                  {"train_images", in.data->train.N},
                  {"test_images", in.data->test.N},
                  {"classes", in.data->classes}};
  for (NormKind k : norms_in(in)) {
    json n;
    std::vector<double> finals, final_losses, final_train, bests, secs;
    for (const RunResult* r : runs_of(in, k)) {
      const EpochStats& last = r->epochs.back();
      const EpochStats* best = &r->epochs.front();
      for (const EpochStats& e : r->epochs)
        if (e.test_acc > best->test_acc) best = &e;
      n["parameters"] = r->parameters;
      n["runs"].push_back({{"seed", r->seed},
                           {"final", {{"epoch", last.epoch},
                                      {"train_loss", last.train_loss},
                                      {"train_acc", last.train_acc},
                                      {"test_loss", last.test_loss},
                                      {"test_acc", last.test_acc},
                                      {"test_correct", last.test_correct}}},
                           {"best", {{"epoch", best->epoch}, {"test_acc", best->test_acc}}},
                           {"seconds", r->seconds}});
      finals.push_back(last.test_acc);
      final_losses.push_back(last.test_loss);
      final_train.push_back(last.train_acc);
      bests.push_back(best->test_acc);
      secs.push_back(r->seconds);
    }
    auto ms = [](const std::vector<double>& v) {
      auto [m, s] = mean_std(v);
      return json{{"mean", m}, {"std", s}, {"n", v.size()}};
    };
    n["final_test_acc"] = ms(finals);
    n["final_test_loss"] = ms(final_losses);
    n["final_train_acc"] = ms(final_train);
    n["best_test_acc"] = ms(bests);
    n["seconds"] = ms(secs);
    n["title"] = norm_title(k);
    j["norms"][norm_key(k)] = n;
  }
  write_text_atomic(path_in(in, "results.json"), j.dump(2) + "\n");
  return j;
}

bool write_plots(const ReportInput& in) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  // --- data files ---
  for (NormKind k : norms) {
    auto runs = runs_of(in, k);
    std::ostringstream os;
    os << "# epoch train_loss train_acc test_loss test_acc test_acc_std (means over "
       << runs.size() << " seed(s))\n";
    for (size_t e = 0; e < runs.front()->epochs.size(); ++e) {
      std::vector<double> tl, ta, vl, va;
      for (const RunResult* r : runs) {
        tl.push_back(r->epochs[e].train_loss), ta.push_back(r->epochs[e].train_acc);
        vl.push_back(r->epochs[e].test_loss), va.push_back(r->epochs[e].test_acc);
      }
      os << e + 1 << ' ' << mean_std(tl).first << ' ' << mean_std(ta).first << ' '
         << mean_std(vl).first << ' ' << mean_std(va).first << ' ' << mean_std(va).second << '\n';
    }
    write_text_atomic(path_in(in, "curves_" + norm_key(k) + ".dat"), os.str());

    // Misclassified test images of the first seed: "x y r g b" blocks, one per image.
    const RunResult& r = *runs.front();
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
      ++shown;
    }
    write_text_atomic(path_in(in, "misclassified_" + norm_key(k) + ".dat"), img.str());
    write_text_atomic(path_in(in, "misclassified_" + norm_key(k) + ".txt"), cap.str());

    // Confusion matrix of the first seed: rows true class, columns predicted.
    const size_t C = d.classes.size();
    std::vector<int64_t> cm(C * C, 0);
    for (int64_t i = 0; i < d.test.N; ++i)
      ++cm[static_cast<size_t>(d.test.labels[i]) * C + static_cast<size_t>(r.test_predictions[i])];
    std::ostringstream cmo;
    for (size_t t = 0; t < C; ++t) {
      for (size_t p = 0; p < C; ++p) cmo << cm[t * C + p] << (p + 1 < C ? " " : "\n");
    }
    write_text_atomic(path_in(in, "confusion_" + norm_key(k) + ".dat"), cmo.str());
  }

  // --- scripts ---
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
  const std::string ds = d.name + " (" + std::to_string(d.train.N) + " train / " +
                         std::to_string(d.test.N) + " test images)";
  for (Chart c : {Chart{"train_loss", "Training loss", "loss (NLL)", 2},
                  Chart{"test_loss", "Test loss", "loss (NLL)", 4},
                  Chart{"test_accuracy", "Test accuracy", "accuracy (%)", 5}}) {
    for (const char* term : {"png", "svg"}) {
      gp << (std::string(term) == "png" ? "set terminal pngcairo size 960,600 font 'Sans,11'\n"
                                        : "set terminal svg size 960,600 font 'Sans,11'\n");
      gp << "set output '" << c.name << "." << term << ".tmp'\n";
      gp << "set title " << gp_quote(std::string(c.title) + " per epoch — " + ds) << "\n";
      gp << "set ylabel '" << c.ylabel << "'\nplot ";
      for (size_t i = 0; i < norms.size(); ++i) {
        gp << (i ? ", \\\n     " : "") << "'curves_" << norm_key(norms[i]) << ".dat' using 1:"
           << c.column << " with linespoints lw 2 pt 7 ps 0.6 lc rgb '" << kColors[i % 3]
           << "' title '" << norm_title(norms[i]) << "'";
      }
      gp << "\nset output\n";
    }
  }
  gp << "reset\n";
  for (NormKind k : norms) {
    const std::string key = norm_key(k);
    std::ifstream caps(path_in(in, "misclassified_" + key + ".txt"));
    std::vector<std::string> lines;
    for (std::string l; std::getline(caps, l);) lines.push_back(l);
    gp << "\n# misclassified test images, " << norm_title(k) << "\n"
       << "set terminal pngcairo size 1100,560 font 'Sans,10'\n"
       << "set output 'misclassified_" << key << ".png.tmp'\n"
       << "set multiplot layout 2,5 title " << gp_quote(norm_title(k) + ": misclassified test images (first seed)") << "\n"
       << "unset key\nunset tics\nunset border\nset size ratio -1\n"
       << "set xrange [-0.5:" << d.test.W - 0.5 << "]\nset yrange [" << d.test.H - 0.5 << ":-0.5]\n";
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string l = lines[i];
      std::string caption = l.substr(l.find('|') + 1);
      caption.replace(caption.find('|'), 1, "\\n");
      gp << "set title \"" << caption << "\" noenhanced\n"
         << "plot 'misclassified_" << key << ".dat' index " << i
         << " using 1:2:3:4:5 with rgbimage\n";
    }
    gp << "unset multiplot\nset output\nreset\n";
    // Confusion matrix with counts.
    gp << "set terminal pngcairo size 760,680 font 'Sans,10'\n"
       << "set output 'confusion_" << key << ".png.tmp'\n"
       << "set title " << gp_quote(norm_title(k) + ": confusion matrix on the test set (first seed)") << "\n"
       << "unset key\nset xlabel 'predicted'\nset ylabel 'true'\nset palette defined (0 'white', 1 '#f28e2b')\n"
       << "set xrange [-0.5:" << d.classes.size() - 0.5 << "]\nset yrange [" << d.classes.size() - 0.5 << ":-0.5]\n"
       << "set xtics rotate by 45 right (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ")\nset ytics (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ")\nplot 'confusion_" << key << ".dat' matrix with image, '' matrix using 1:2:(sprintf('%d', $3)) "
       << "with labels tc rgb 'black'\nset output\nreset\n";
  }
  write_text_atomic(path_in(in, "plots.gp"), gp.str());

  if (std::system("gnuplot --version > /dev/null 2>&1") != 0) {
    std::fprintf(stderr,
                 "compare_norms: gnuplot not found, so no pictures were drawn; the data and the "
                 "script are in %s (install gnuplot-nox and run `gnuplot plots.gp` there)\n",
                 in.out_dir.c_str());
    return false;
  }
  const std::string cmd = "cd '" + in.out_dir + "' && gnuplot plots.gp > gnuplot.log 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "compare_norms: gnuplot failed on %s/plots.gp; see %s/gnuplot.log\n",
                 in.out_dir.c_str(), in.out_dir.c_str());
    for (const auto& f : fs::directory_iterator(in.out_dir))
      if (f.path().extension() == ".tmp") fs::remove(f.path());
    return false;
  }
  // gnuplot wrote *.tmp files; each becomes visible only once complete.
  for (const auto& f : fs::directory_iterator(in.out_dir)) {
    if (f.path().extension() != ".tmp") continue;
    fs::path final = f.path();
    final.replace_extension();
    fs::rename(f.path(), final);
  }
  return true;
}

void write_report_md(const ReportInput& in, const json& results, bool pictures) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  std::ostringstream md;
  const int64_t epochs = in.config.value("epochs", int64_t(0));
  md << "# compare_norms: BatchNorm vs GroupNorm vs LayerNorm\n\n"
     << "Dataset **" << d.name << "**: " << d.train.N << " training and " << d.test.N
     << " test images. " << epochs << " epochs, batch " << in.config.value("batch_size", 0)
     << ", SGD + OneCycle (max lr " << in.config.value("lr", 0.0) << "), seeds "
     << in.config.value("seed", 0) << ".." << in.config.value("seed", 0) + in.config.value("seeds", 1) - 1
     << ", device " << in.config.value("device", std::string("cpu")) << ".\n\n";
  md << "| norm | parameters | final train acc | final test loss | final test acc | best test acc | time per run |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (NormKind k : norms) {
    const json& n = results["norms"][norm_key(k)];
    auto pm = [&](const char* key, int digits, const char* unit) {
      std::string s = fmt(n[key]["mean"].get<double>(), digits) + unit;
      if (n[key]["n"].get<size_t>() > 1) s += " ± " + fmt(n[key]["std"].get<double>(), digits);
      return s;
    };
    md << "| " << norm_title(k) << " | " << n["parameters"].get<int64_t>() << " | "
       << pm("final_train_acc", 2, "%") << " | " << pm("final_test_loss", 4, "") << " | **"
       << pm("final_test_acc", 2, "%") << "** | " << pm("best_test_acc", 2, "%") << " | "
       << pm("seconds", 0, " s") << " |\n";
  }
  md << "\nMeans ± sample standard deviation over seeds; per-epoch numbers are in `metrics.csv`, "
        "everything above in `results.json`.\n\n";
  if (pictures) {
    md << "## Curves\n\n![training loss](train_loss.png)\n\n![test loss](test_loss.png)\n\n"
       << "![test accuracy](test_accuracy.png)\n\n## Misclassified test images\n\n";
    for (NormKind k : norms)
      md << "![" << norm_title(k) << " misclassified](misclassified_" << norm_key(k) << ".png)\n\n";
    md << "## Confusion matrices\n\n";
    for (NormKind k : norms)
      md << "![" << norm_title(k) << " confusion](confusion_" << norm_key(k) << ".png)\n\n";
  } else {
    md << "Pictures were not rendered (gnuplot missing or failed): run `gnuplot plots.gp` in this "
          "folder.\n";
  }
  write_text_atomic(path_in(in, "report.md"), md.str());
}

}  // namespace compare
