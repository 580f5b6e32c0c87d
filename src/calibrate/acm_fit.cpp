#include "calibrate/acm_fit.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "kernels/backend.hpp"
#include "skim/error.hpp"

namespace skim::calibration {

namespace {

using Clock = std::chrono::steady_clock;
using execute::acm::BudgetPoint;
using execute::acm::FfnLearners;
using execute::acm::Gate;
using execute::acm::LayerSpec;
using kernels::Linear;

constexpr float kLogErrorFloor = -14.f;  // log(‖·‖/‖x‖) below ~1e-6 is rounding

// What the recording pass keeps of one layer: Σ|a_j| over every token, and
// the FFN inputs of a sample of tokens (every stride-th), each marked
// fitting or held out (every fifth text is held out).
struct Recording {
  std::vector<double> activation_sum;
  std::size_t tokens = 0;
  std::vector<float> inputs;  // rows × H
  std::vector<char> held_out;
  int rows() const noexcept { return static_cast<int>(held_out.size()); }
};

// Per layer after fitting: each kept row's true and predicted log error
// per prefix (rows × N), for the budget grid.
struct Errors {
  std::vector<float> truth, predicted;
};

std::vector<int> acm_layers(int L, const std::vector<int>& asked) {
  std::vector<int> layers = asked;
  if (layers.empty()) {
    layers.resize(L);
    std::iota(layers.begin(), layers.end(), 0);
  }
  for (int l : layers)
    if (l < 0 || l >= L)
      throw Error(ErrorCode::invalid_argument,
                  "ACM layer " + std::to_string(l) + " is outside the model's layers 0–" + std::to_string(L - 1));
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

// First k whose error is within log ε (N if none), as the runtime gate decides.
int choose(const float* log_errors, int N, float log_epsilon) {
  int k = 0;
  while (k < N && log_errors[k] > log_epsilon) ++k;
  return k;
}

constexpr float kEveryLearner = kLogErrorFloor - 1;  // a log ε no prefix but the last meets

// Mean k/N over a layer's kept rows at log ε.
double width_share(const Errors& errors, int N, bool oracle, float log_epsilon) {
  const auto& v = oracle ? errors.truth : errors.predicted;
  double sum = 0;
  std::size_t n = 0;
  for (std::size_t r = 0; r * N < v.size(); ++r, ++n) sum += choose(v.data() + r * N, N, log_epsilon);
  return n ? sum / (static_cast<double>(n) * N) : 1.0;
}

// log ε at which the layer's mean width share is `budget` (it falls as ε grows).
float bisect_log_epsilon(const Errors& errors, int N, bool oracle, double budget) {
  if (budget >= 1) return kEveryLearner;
  float lo = kEveryLearner, hi = 8.f;  // share(lo) = 1, share(hi) ≈ 0
  for (int i = 0; i < 40; ++i) {
    const float mid = 0.5f * (lo + hi);
    (width_share(errors, N, oracle, mid) > budget ? lo : hi) = mid;
  }
  return hi;
}

// Width shares a layer's gate is set to, from whole down.
constexpr auto& kLevels = kAllocationLevels;
constexpr int kLevelCount = kAllocationLevelCount;

// Least squares for each prefix's down projection (module-wise distillation
// in closed form): on the fitting rows, the activations a of learners
// 0..k-1 (m_k neurons) regressed on the FFN's output y with an intercept,
// W_k = (Cov(a) + λI)⁻¹ Cov(a, y); λ = α·tr(Cov(a))/m_k, α chosen per
// prefix on the held-out rows. One pass gathers the moments of every
// neuron; prefix k uses their leading block. Returns the downs ([H, m_k]
// for k = 1..N−1) and, per prefix, the held-out unexplained share of y's
// variance, refitted and as partitioned.
nlohmann::json refit_prefixes(const FfnLearners& learners, const Recording& rec, const execute::acm::FfnWeights& ffn,
                              std::span<const int> order, kernels::Scratch& gemm_scratch,
                              std::vector<std::vector<float>>& downs) {
  using Eigen::MatrixXd;
  using Eigen::VectorXd;
  const int N = learners.learners(), H = learners.hidden(), F = learners.ffn_width();
  struct Moments {
    MatrixXd aa, ay;
    VectorXd a, y;
    double yy = 0, n = 0;
  };
  std::vector<Moments> parts(2, {MatrixXd::Zero(F, F), MatrixXd::Zero(F, H), VectorXd::Zero(F), VectorXd::Zero(H)});
  constexpr int chunk = 1024;
  const std::size_t padded = Linear::padded_rows(chunk);
  std::vector<float> x(padded * H), full(padded * H), blocks(padded * F), buffer(learners.scratch_floats(chunk));
  Eigen::MatrixXf a(F, chunk);  // the learners' activations, neurons in order, a column per row
  std::vector<int> rows_for(N);
  for (int part = 0; part < 2; ++part) {
    Moments& m = parts[part];
    auto add = [&](int count) {
      std::fill(rows_for.begin(), rows_for.end(), count);
      std::fill(full.begin(), full.end(), 0.f);
      learners.activations(x.data(), blocks.data(), rows_for, gemm_scratch, buffer.data());
      learners(x.data(), full.data(), rows_for, gemm_scratch, buffer.data());
      for (int g = 0, first = 0; g < N; first += learners.width(g), ++g)
        a.middleRows(first, learners.width(g)).leftCols(count) = Eigen::Map<const Eigen::MatrixXf>(
            blocks.data() + FfnLearners::activation_offset(first, count), learners.width(g), count);
      const Eigen::Map<const Eigen::MatrixXf> y(full.data(), H, count);
      const auto used = a.leftCols(count);
      m.aa += (used * used.transpose()).cast<double>();
      m.ay += (used * y.transpose()).cast<double>();
      m.a += used.rowwise().sum().cast<double>();
      m.y += y.rowwise().sum().cast<double>();
      m.yy += y.cast<double>().squaredNorm();
      m.n += count;
    };
    int count = 0;
    for (int r = 0; r < rec.rows(); ++r) {
      if (rec.held_out[r] != part) continue;
      std::copy_n(rec.inputs.begin() + static_cast<std::ptrdiff_t>(r) * H, H, x.begin() + static_cast<std::ptrdiff_t>(count) * H);
      if (++count == chunk) add(count), count = 0;
    }
    if (count > 0) add(count);
  }
  const Moments& fit = parts[0];
  const Moments& held = parts[1];
  if (fit.n < 2) throw Error(ErrorCode::invalid_argument, "ACM refit: too few fitting rows");
  const VectorXd mean_a = fit.a / fit.n, mean_y = fit.y / fit.n;
  // Held-out sum of squares around the fitting means, total and left by
  // y ≈ μ_y + (a − μ_a)·W on the first m neurons.
  const double total = held.yy - 2 * mean_y.dot(held.y) + held.n * mean_y.squaredNorm();
  auto held_out_share = [&](int m, const MatrixXd& w) {
    if (held.n == 0) return 0.0;
    const auto mu = mean_a.head(m);
    const MatrixXd aa = held.aa.topLeftCorner(m, m) - held.a.head(m) * mu.transpose() - mu * held.a.head(m).transpose() +
                        held.n * mu * mu.transpose();
    const MatrixXd ay = held.ay.topRows(m) - held.a.head(m) * mean_y.transpose() - mu * held.y.transpose() +
                        held.n * mu * mean_y.transpose();
    const double left = total - 2 * (w.array() * ay.array()).sum() + (w.transpose() * aa * w).trace();
    return left / std::max(total, 1e-300);
  };
  downs.assign(N - 1, {});
  nlohmann::json prefixes = nlohmann::json::array();
  for (int k = 1; k < N; ++k) {
    const int m = learners.prefix_width(k);
    const auto mu = mean_a.head(m);
    const MatrixXd cov = fit.aa.topLeftCorner(m, m) / fit.n - mu * mu.transpose();
    const MatrixXd cross = fit.ay.topRows(m) / fit.n - mu * mean_y.transpose();
    const double scale = cov.trace() / m;
    MatrixXd best;
    double best_share = std::numeric_limits<double>::infinity(), best_alpha = 0;
    for (double alpha : {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}) {
      MatrixXd regularized = cov;
      regularized.diagonal().array() += alpha * std::max(scale, 1e-30);
      const MatrixXd w = regularized.llt().solve(cross);  // m × H
      const double share = held_out_share(m, w);
      if (share < best_share || best.size() == 0) best = w, best_share = share, best_alpha = alpha;
    }
    MatrixXd partition(m, H);  // the FFN's own down columns of these neurons
    for (int j = 0; j < m; ++j)
      for (int o = 0; o < H; ++o) partition(j, o) = ffn.down[static_cast<std::size_t>(o) * F + order[j]];
    downs[k - 1].resize(static_cast<std::size_t>(H) * m);
    for (int o = 0; o < H; ++o)
      for (int j = 0; j < m; ++j) downs[k - 1][static_cast<std::size_t>(o) * m + j] = static_cast<float>(best(j, o));
    prefixes.push_back({{"learners", k}, {"alpha", best_alpha},
                        {"held_out_unexplained_share", best_share},
                        {"held_out_unexplained_share_partition", held_out_share(m, partition)}});
  }
  return prefixes;
}

}  // namespace

int default_learners(int ffn_width) { return std::clamp(ffn_width / 256, 4, 16); }

AcmFit fit_acm(AcmTarget& target, const kernels::Backend& backend, const AcmFitOptions& options) {
  const auto start = Clock::now();
  if (!(options.budget > 0 && options.budget <= 1))
    throw Error(ErrorCode::invalid_argument, "ACM budget " + std::to_string(options.budget) + " is outside (0, 1]");
  const int H = target.hidden, I = target.ffn;
  const int N = options.learners > 0 ? options.learners : default_learners(I);
  if (N > I)
    throw Error(ErrorCode::invalid_argument, "ACM: " + std::to_string(N) + " learners for an FFN of width " +
                                                 std::to_string(I) + " (need 1 to " + std::to_string(I) + ")");
  const std::vector<int> layers = acm_layers(target.layers, options.layers);
  const auto& progress = options.progress;

  // 1. A dense pass (with the MoD routing, if any): Σ|a_j| per neuron and a
  // sample of FFN inputs per layer.
  const std::size_t needed = static_cast<std::size_t>(5) * (H + 1);
  if (target.tokens < needed)
    throw Error(ErrorCode::invalid_argument, "ACM: the calibration texts hold " + std::to_string(target.tokens) +
                                                 " tokens; fitting gates on a hidden size of " + std::to_string(H) +
                                                 " needs at least " + std::to_string(needed));
  const std::size_t stride = std::max<std::size_t>(1, (target.tokens + options.max_tokens - 1) / options.max_tokens);
  std::vector<Recording> recorded(target.layers);
  for (int l : layers) recorded[l].activation_sum.assign(I, 0.0);
  if (progress) progress("recording FFN activations", 0, 1);
  target.record(layers, [&](int l, const float* x, const float* a, int rows, const char* held_out) {
    Recording& rec = recorded[l];
    for (int r = 0; r < rows; ++r) {
      const float* act = a + static_cast<std::size_t>(r) * I;
      for (int j = 0; j < I; ++j) rec.activation_sum[j] += std::abs(act[j]);
      if ((rec.tokens++) % stride != 0) continue;
      rec.inputs.insert(rec.inputs.end(), x + static_cast<std::size_t>(r) * H, x + static_cast<std::size_t>(r + 1) * H);
      rec.held_out.push_back(held_out[r]);
    }
  });
  if (progress) progress("recording FFN activations", 1, 1);

  // 2. Per layer: neuron order, learners, corrections, gate.
  AcmFit fit;
  fit.spec.budget = options.budget;
  std::vector<Errors> errors;
  nlohmann::json layer_reports = nlohmann::json::array();
  kernels::Scratch gemm_scratch(backend);
  constexpr int chunk = 1024;
  std::vector<int> rows_for(N);
  for (std::size_t li = 0; li < layers.size(); ++li) {
    const int l = layers[li];
    if (progress) progress("fitting gates", li, layers.size());
    const Recording& rec = recorded[l];
    const auto ffn = target.ffn_weights(l);
    LayerSpec spec;
    spec.layer = l;
    spec.learners = N;
    std::vector<double> importance(I);
    for (int j = 0; j < I; ++j) {
      double column = 0;
      for (int o = 0; o < H; ++o) column += double(ffn.down[static_cast<std::size_t>(o) * I + j]) * ffn.down[static_cast<std::size_t>(o) * I + j];
      importance[j] = rec.activation_sum[j] / std::max<std::size_t>(rec.tokens, 1) * std::sqrt(column);
    }
    spec.order.resize(I);
    std::iota(spec.order.begin(), spec.order.end(), 0);
    std::stable_sort(spec.order.begin(), spec.order.end(), [&](int a, int b) { return importance[a] > importance[b]; });
    FfnLearners learners(backend, target.activation, ffn, H, I, spec.order, N);
    nlohmann::json refit_report;
    if (options.refit) {
      refit_report = refit_prefixes(learners, rec, ffn, spec.order, gemm_scratch, spec.refit_down);
      learners.set_refit(backend, spec.refit_down);
    }

    // Prefix sums P_k (k learners) and the FFN F = P_N per chunk of rows;
    // `visit(first, count, full, prefix, k)` sees P_k for k = 0..N−1.
    const int rows = rec.rows();
    const std::size_t padded = static_cast<std::size_t>(Linear::padded_rows(chunk)) * H;
    std::vector<float> x(padded), full(padded), prefix(padded), learner(learners.scratch_floats(chunk));
    auto sweep = [&](auto&& visit) {
      for (int first = 0; first < rows; first += chunk) {
        const int count = std::min(chunk, rows - first);
        std::copy(rec.inputs.begin() + static_cast<std::ptrdiff_t>(first) * H,
                  rec.inputs.begin() + static_cast<std::ptrdiff_t>(first + count) * H, x.begin());
        std::fill(full.begin(), full.end(), 0.f);
        std::fill(prefix.begin(), prefix.end(), 0.f);
        std::fill(rows_for.begin(), rows_for.end(), count);
        learners(x.data(), full.data(), rows_for, gemm_scratch, learner.data());
        for (int k = 0; k < N; ++k) {
          visit(first, count, k);
          learners.next_prefix(x.data(), prefix.data(), count, k, rows_for, gemm_scratch, learner.data());
        }
      }
    };
    // c_k = mean over fitting rows of F − P_k (c_N = 0: all learners are the FFN).
    std::vector<double> residual_sum(static_cast<std::size_t>(N) * H, 0.0);
    std::size_t fitting_rows = 0;
    for (int r = 0; r < rows; ++r) fitting_rows += !rec.held_out[r];
    sweep([&](int first, int count, int k) {
      for (int r = 0; r < count; ++r) {
        if (rec.held_out[first + r]) continue;
        for (int o = 0; o < H; ++o)
          residual_sum[static_cast<std::size_t>(k) * H + o] +=
              full[static_cast<std::size_t>(r) * H + o] - prefix[static_cast<std::size_t>(r) * H + o];
      }
    });
    spec.corrections.assign(static_cast<std::size_t>(N + 1) * H, 0.f);
    for (std::size_t i = 0; i < residual_sum.size(); ++i)
      spec.corrections[i] = static_cast<float>(residual_sum[i] / std::max<std::size_t>(fitting_rows, 1));

    // True log errors per prefix, and the gate's normal equations per k.
    Errors e;
    e.truth.assign(static_cast<std::size_t>(rows) * N, 0.f);
    std::vector<Normal> fitting(N, Normal(H + 1)), held_out(N, Normal(H + 1));
    Eigen::MatrixXf features(chunk, H + 1);
    Eigen::VectorXf target(chunk);
    sweep([&](int first, int count, int k) {
      const float* c = spec.corrections.data() + static_cast<std::size_t>(k) * H;
      for (int r = 0; r < count; ++r) {
        const std::size_t at = static_cast<std::size_t>(r) * H;
        const double error = execute::acm::relative_error(prefix.data() + at, c, full.data() + at, x.data() + at, H);
        const float log_error = std::max(kLogErrorFloor, static_cast<float>(std::log(std::max(error, 1e-150))));
        e.truth[static_cast<std::size_t>(first + r) * N + k] = log_error;
      }
      for (int part = 0; part < 2; ++part) {
        int n = 0;
        for (int r = 0; r < count; ++r) {
          if (rec.held_out[first + r] != part) continue;
          for (int o = 0; o < H; ++o) features(n, o) = x[static_cast<std::size_t>(r) * H + o];
          features(n, H) = 1.f;
          target(n) = e.truth[static_cast<std::size_t>(first + r) * N + k];
          ++n;
        }
        if (n > 0) (part ? held_out : fitting)[k].add(features.topRows(n), target.head(n));
      }
    });
    spec.gate_weight.resize(static_cast<std::size_t>(N) * H);
    spec.gate_bias.resize(N);
    nlohmann::json gates = nlohmann::json::array();
    for (int k = 0; k < N; ++k) {
      const RidgeFit ridge = ridge_with_held_out(fitting[k], held_out[k]);
      for (int o = 0; o < H; ++o) spec.gate_weight[static_cast<std::size_t>(k) * H + o] = static_cast<float>(ridge.weights(o));
      spec.gate_bias[k] = static_cast<float>(ridge.weights(H));
      gates.push_back({{"learners", k}, {"ridge_alpha", ridge.alpha}, {"held_out_r2", ridge.held_out_r2},
                       {"mean_log_error", fitting[k].y_sum / std::max<std::size_t>(fitting[k].n, 1)}});
    }
    // The fitted gate's predictions on the same rows, for the budget grid.
    e.predicted.resize(e.truth.size());
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < N; ++k) {
        double v = spec.gate_bias[k];
        const float* w = spec.gate_weight.data() + static_cast<std::size_t>(k) * H;
        const float* xr = rec.inputs.data() + static_cast<std::size_t>(r) * H;
        for (int o = 0; o < H; ++o) v += double(w[o]) * xr[o];
        e.predicted[static_cast<std::size_t>(r) * N + k] = static_cast<float>(v);
      }
    double first_share = 0, total = 0;
    for (int j = 0; j < I; ++j) total += importance[spec.order[j]], first_share += j < I / N ? importance[spec.order[j]] : 0;
    layer_reports.push_back({{"layer", l}, {"rows", rows}, {"tokens_seen", rec.tokens},
                             {"importance_share_of_first_learner", total > 0 ? first_share / total : 0.0},
                             {"gates", gates}});
    if (options.refit) layer_reports.back()["refit"] = refit_report;
    errors.push_back(std::move(e));
    fit.spec.layers.push_back(std::move(spec));
  }

  // 3. Allocation. Per layer and level (the share of its width left), the
  // ε reaching it on the layer's kept rows; each layer's sensitivity at
  // each level alone (KL of the output against the model without ACM, on a
  // spread of the texts); then greedily lower the layer whose next level
  // costs least output change per FFN FLOP saved, down to the last level.
  // Every allocation on that path is a budget point: the grid the runtime
  // budget knob interpolates on.
  const std::size_t E = layers.size();
  std::vector<std::vector<float>> level_epsilon(E), level_oracle_epsilon(E);
  for (std::size_t li = 0; li < E; ++li)
    for (double b : kLevels) {
      level_epsilon[li].push_back(bisect_log_epsilon(errors[li], N, false, b));
      level_oracle_epsilon[li].push_back(bisect_log_epsilon(errors[li], N, true, b));
    }
  fit.spec.budgets = {{1.0, std::vector<float>(E, kEveryLearner), std::vector<float>(E, kEveryLearner)}};
  execute::acm::WidthGating gating = execute::acm::build_width_gating(
      fit.spec, [&](int layer) { return target.ffn_weights(layer); }, target.activation, H, I, backend,
      kernels::WeightPrecision::f32);
  target.prepare(gating);
  const ModelOutputs whole = target.run(nullptr, true);
  // Runs the sample with layer `li` at `level`, every other adaptive layer whole.
  auto run_alone = [&](std::size_t li, int level) {
    gating.budgets.front().log_epsilon.assign(E, kEveryLearner);
    gating.budgets.front().log_epsilon[li] = level_epsilon[li][level];
    const execute::acm::WidthRouting width(gating, Gate::learned, 1.0);
    return target.run(&width, true);
  };
  std::vector<std::vector<double>> cost(E, std::vector<double>(kLevelCount, 0.0)),
      saved(E, std::vector<double>(kLevelCount, 0.0));
  for (std::size_t li = 0; li < E; ++li) {
    const ModelOutputs base = run_alone(li, 0);
    for (int v = 1; v < kLevelCount; ++v) {
      if (progress) progress("measuring FFN sensitivity", li * (kLevelCount - 1) + v - 1, E * (kLevelCount - 1));
      const ModelOutputs adaptive = run_alone(li, v);
      cost[li][v] = output_change(whole, adaptive, target.classifier);
      saved[li][v] = base.flops.ffn_executed - adaptive.flops.ffn_executed;
    }
  }
  std::vector<int> level(E, 0);
  auto point = [&] {
    execute::acm::BudgetPoint p;
    p.budget = 0;
    for (std::size_t li = 0; li < E; ++li) {
      p.budget += kLevels[level[li]] / E;
      p.log_epsilon.push_back(level_epsilon[li][level[li]]);
      p.oracle_log_epsilon.push_back(level_oracle_epsilon[li][level[li]]);
    }
    return p;
  };
  std::vector<execute::acm::BudgetPoint> path = {point()};
  nlohmann::json steps = nlohmann::json::array();
  for (std::size_t best; (best = lower_cheapest(cost, saved, level)) < E;) {
    path.push_back(point());
    steps.push_back({{"layer", layers[best]}, {"width", kLevels[level[best]]}, {"budget", path.back().budget}});
  }
  std::reverse(path.begin(), path.end());  // ascending by budget
  fit.spec.budgets = path;
  gating.budgets = path;

  // 4. What it does on the calibration texts, at the budget asked for.
  if (progress) progress("checking", 0, 1);
  const execute::acm::WidthRouting width(gating, Gate::learned, options.budget);
  const ModelOutputs reference = target.run(nullptr, false);
  const ModelOutputs adaptive = target.run(&width, false);
  fit.ffn_flops_share = adaptive.flops.ffn_executed / std::max(adaptive.flops.ffn_dense, 1.0);
  fit.agreement = target.classifier ? argmax_agreement(reference, adaptive) : 1.0;
  fit.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::json sensitivity = nlohmann::json::array();
  for (std::size_t li = 0; li < E; ++li) {
    nlohmann::json levels = nlohmann::json::array();
    for (int v = 0; v < kLevelCount; ++v)
      levels.push_back({{"width", kLevels[v]}, {"output_change", cost[li][v]},
                        {"ffn_flops_saved_share", saved[li][v] / std::max(whole.flops.ffn_dense, 1.0)}});
    sensitivity.push_back({{"layer", layers[li]}, {"levels", levels}});
  }
  fit.report = {{"budget", options.budget},
                {"learners", N},
                {"refit", options.refit},
                {"layers", layers},
                {"tokens", target.tokens},
                {"gate", "ridge regression of log relative error per prefix on the FFN input; k = first prefix within ε"},
                {"per_layer", layer_reports},
                {"allocation", "greedy by output change per FFN FLOP saved, each layer alone at each width"},
                {"sensitivity", sensitivity},
                {"sensitivity_texts", target.sample_texts},
                {"checked_on", target.check_on},
                {"greedy_steps", steps},
                {"ffn_flops_share", fit.ffn_flops_share},
                {"flops_share", adaptive.flops.executed / std::max(reference.flops.dense, 1.0)},
                {"output_change", output_change(reference, adaptive, target.classifier)},
                {"argmax_agreement", fit.agreement},
                {"seconds", fit.seconds}};
  if (progress) progress("checking", 1, 1);
  fit.gating = std::move(gating);
  return fit;
}

}  // namespace skim::calibration
