#include "calibrate/fitting.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/backend.hpp"
#include "kernels/ops.hpp"

#include "skim/error.hpp"

namespace skim::calibration {

Packed pack(const Engine::Impl& engine, std::span<const std::string> texts) {
  Packed p;
  execute::TokenBatch batch;
  batch.clear();
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto encoding = engine.wordpiece->encode(texts[i], static_cast<std::size_t>(engine.max_sequence));
    if (encoding.ids.size() <= 2)
      throw Error(ErrorCode::invalid_argument, "calibration text " + std::to_string(i + 1) + " has no tokens");
    if (batch.rows() + static_cast<int>(encoding.ids.size()) > engine.max_batch_rows) {
      p.batches.push_back(batch);
      batch.clear();
    }
    batch.add(encoding.ids);
    p.tokens += encoding.ids.size();
  }
  if (batch.sequences() > 0) p.batches.push_back(batch);
  return p;
}

execute::EncoderWorkspace encoder_workspace(const Engine::Impl& engine, const execute::acm::WidthGating* width) {
  return execute::EncoderWorkspace(*engine.encoder, engine.max_batch_rows, engine.max_sequence, width);
}

int ModelOutputs::argmax(std::size_t text) const {
  const float* row = values.data() + text * width;
  return static_cast<int>(std::max_element(row, row + width) - row);
}

ModelOutputs run_packed(const Engine::Impl& engine, const Packed& packed, const execute::Skipping& skip,
                          execute::EncoderWorkspace& ws) {
  const bool classifier = engine.encoder->has_classifier();
  ModelOutputs out;
  out.width = classifier ? engine.encoder->num_labels() : engine.encoder->hidden_size();
  out.tokens = packed.tokens;
  for (const auto& batch : packed.batches) {
    out.flops += engine.encoder->encode(batch, ws, skip);
    if (classifier) {
      out.flops += engine.encoder->classify_head(batch, ws);
      out.values.insert(out.values.end(), ws.logits(), ws.logits() + static_cast<std::size_t>(batch.sequences()) * out.width);
    } else {
      for (int s = 0; s < batch.sequences(); ++s) {
        const float* row = ws.hidden() + static_cast<std::size_t>(batch.offsets[s]) * out.width;
        out.values.insert(out.values.end(), row, row + out.width);
      }
    }
  }
  return out;
}

ModelOutputs run_encoder_on(const Engine::Impl& engine, std::span<const std::string> texts,
                              const execute::Skipping& skip) {
  kernels::set_thread_count(engine.options.threads());
  auto ws = encoder_workspace(engine, skip.width ? &skip.width->gating() : nullptr);
  return run_packed(engine, pack(engine, texts), skip, ws);
}

double output_change(const ModelOutputs& dense, const ModelOutputs& routed, bool classifier) {
  const std::size_t texts = dense.texts();
  double total = 0;
  std::vector<float> p(dense.width), q(dense.width);
  for (std::size_t t = 0; t < texts; ++t) {
    const float* a = dense.values.data() + t * dense.width;
    const float* b = routed.values.data() + t * dense.width;
    if (classifier) {
      p.assign(a, a + dense.width);
      q.assign(b, b + dense.width);
      kernels::softmax(p);
      kernels::softmax(q);
      for (int j = 0; j < dense.width; ++j)
        if (p[j] > 0) total += p[j] * (std::log(p[j]) - std::log(std::max(q[j], 1e-30f)));
    } else {
      double change = 0, size = 0;
      for (int j = 0; j < dense.width; ++j) change += (b[j] - a[j]) * (b[j] - a[j]), size += a[j] * a[j];
      total += change / std::max(size, 1e-30);
    }
  }
  return total / std::max<std::size_t>(texts, 1);
}

double argmax_agreement(const ModelOutputs& reference, const ModelOutputs& other) {
  const std::size_t n = reference.texts();
  std::size_t agree = 0;
  for (std::size_t t = 0; t < n; ++t) agree += reference.argmax(t) == other.argmax(t);
  return static_cast<double>(agree) / std::max<std::size_t>(n, 1);
}

void Normal::add(const Eigen::MatrixXf& x, const Eigen::VectorXf& y) {
  gram += (x.transpose() * x).cast<double>();
  moment += (x.transpose() * y).cast<double>();
  yy += y.cast<double>().squaredNorm();
  y_sum += y.cast<double>().sum();
  n += static_cast<std::size_t>(x.rows());
}

namespace {

Eigen::VectorXd ridge(const Eigen::MatrixXd& gram, const Eigen::VectorXd& moment, double lambda) {
  Eigen::MatrixXd a = gram;
  for (int i = 0; i + 1 < a.rows(); ++i) a(i, i) += lambda;  // the bias (last) is not shrunk
  return a.ldlt().solve(moment);
}

}  // namespace

RidgeFit ridge_with_held_out(const Normal& f, const Normal& h) {
  RidgeFit fit;
  fit.held_out_r2 = -1e300;
  for (double alpha : {1e-4, 1e-3, 1e-2, 1e-1, 1.0}) {
    const Eigen::VectorXd w = ridge(f.gram, f.moment, alpha * f.n);
    const double sse = h.yy - 2 * w.dot(h.moment) + w.dot(h.gram * w);
    const double sst = h.yy - h.y_sum * h.y_sum / std::max<std::size_t>(h.n, 1);
    const double r2 = h.n > 1 && sst > 0 ? 1 - sse / sst : 0;
    if (r2 > fit.held_out_r2) fit.held_out_r2 = r2, fit.alpha = alpha;
  }
  fit.weights = ridge(f.gram + h.gram, f.moment + h.moment, fit.alpha * (f.n + h.n));
  return fit;
}

std::size_t spread_stride(std::size_t tokens, std::size_t max_tokens) {
  return std::max<std::size_t>(1, (tokens + max_tokens - 1) / std::max<std::size_t>(max_tokens, 1));
}

std::vector<std::string> spread_sample(std::span<const std::string> texts, const Packed& packed, std::size_t max_tokens) {
  const std::size_t stride = spread_stride(packed.tokens, max_tokens);
  std::vector<std::string> sample;
  for (std::size_t i = 0; i < texts.size(); i += stride) sample.push_back(texts[i]);
  return sample;
}

std::size_t lower_cheapest(const std::vector<std::vector<double>>& cost, const std::vector<std::vector<double>>& saved,
                           std::vector<int>& levels) {
  const std::size_t E = levels.size();
  std::size_t best = E;
  double best_ratio = 0;
  for (std::size_t e = 0; e < E; ++e) {
    const int v = levels[e];
    if (v + 1 >= kAllocationLevelCount) continue;
    const double d_saved = saved[e][v + 1] - saved[e][v];
    const double ratio = (cost[e][v + 1] - cost[e][v]) / std::max(d_saved, 1.0);
    if (best == E || ratio < best_ratio) best = e, best_ratio = ratio;
  }
  if (best < E) ++levels[best];
  return best;
}

float quantile(std::vector<float> values, double share) {
  if (values.empty()) return 0;
  const std::size_t k = std::min(values.size() - 1, static_cast<std::size_t>(share * values.size()));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

}  // namespace skim::calibration
