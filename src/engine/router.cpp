#include "engine/router.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "format/atomic_file.hpp"
#include "format/content_hash.hpp"
#include "format/safetensors.hpp"
#include "format/safetensors_writer.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;

namespace {

constexpr int kPackageFormatVersion = 1;

// Certificates in skim.json; +inf (never accept) is written as null.
nlohmann::json threshold_json(double t) { return std::isfinite(t) ? nlohmann::json(t) : nlohmann::json(nullptr); }
double threshold_from(const nlohmann::json& j) {
  return j.is_null() ? std::numeric_limits<double>::infinity() : j.get<double>();
}

nlohmann::json certificate_json(const Certificate& c) {
  nlohmann::json labels = nlohmann::json::array();
  for (double t : c.label_thresholds) labels.push_back(threshold_json(t));
  return {{"certified", c.certified},
          {"reason", c.reason},
          {"risk", std::string(to_string(c.risk))},
          {"epsilon", c.epsilon},
          {"delta", c.delta},
          {"n", c.n},
          {"accepted", c.accepted},
          {"disagreements", c.disagreements},
          {"empirical_risk", c.empirical_risk},
          {"upper_bound", c.upper_bound},
          {"coverage", c.coverage},
          {"threshold", threshold_json(c.threshold)},
          {"label_thresholds", labels},
          {"data_hash", c.data_hash},
          {"proposer_version", c.proposer_version}};
}

Certificate certificate_from(const nlohmann::json& j) {
  Certificate c;
  c.certified = j.at("certified").get<bool>();
  c.reason = j.at("reason").get<std::string>();
  const auto risk = j.at("risk").get<std::string>();
  if (risk != "selective" && risk != "joint") throw std::invalid_argument("risk \"" + risk + "\" is not selective or joint");
  c.risk = risk == "joint" ? Risk::joint : Risk::selective;
  c.epsilon = j.at("epsilon").get<double>();
  c.delta = j.at("delta").get<double>();
  c.n = j.at("n").get<std::size_t>();
  c.accepted = j.at("accepted").get<std::size_t>();
  c.disagreements = j.at("disagreements").get<std::size_t>();
  c.empirical_risk = j.at("empirical_risk").get<double>();
  c.upper_bound = j.at("upper_bound").get<double>();
  c.coverage = j.at("coverage").get<double>();
  c.threshold = threshold_from(j.at("threshold"));
  for (const auto& t : j.at("label_thresholds")) c.label_thresholds.push_back(threshold_from(t));
  c.data_hash = j.at("data_hash").get<std::string>();
  c.proposer_version = j.at("proposer_version").get<std::string>();
  if (!(c.epsilon > 0 && c.epsilon < 1) || !(c.delta > 0 && c.delta < 1))
    throw std::invalid_argument("epsilon and delta must be in (0, 1)");
  return c;
}

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span(v));
}

// Embeddings are stored as F16 (rounded_to_f16 makes that exact).
std::vector<std::uint16_t> to_f16_bits(const std::vector<float>& values) {
  std::vector<std::uint16_t> out(values.size());
  std::transform(values.begin(), values.end(), out.begin(), propose::f16_bits);
  return out;
}

std::vector<std::uint64_t> u64_values(const format::TensorView& t) {
  std::vector<std::uint64_t> out(static_cast<std::size_t>(t.numel()));
  std::memcpy(out.data(), t.bytes.data(), out.size() * 8);
  return out;
}

const format::TensorView& require_tensor(const format::TensorStore& store, const std::string& name, format::DType dtype) {
  const format::TensorView* t = store.find(name);
  if (t == nullptr) throw Error(ErrorCode::format, store.source() + ": no tensor '" + name + "'");
  if (t->dtype != dtype)
    throw Error(ErrorCode::format, store.source() + ": tensor '" + name + "' is " + std::string(format::to_string(t->dtype)) +
                                       ", expected " + std::string(format::to_string(dtype)));
  return *t;
}

}  // namespace

PackageFiles package_files(const fs::path& model, const fs::path& out) {
  const bool directory = fs::is_directory(model);
  const fs::path dir = !out.empty() ? out : directory ? model : model.parent_path();
  const std::string prefix = directory ? "" : model.filename().string() + ".";
  return {dir / (prefix + kPackageJson), dir / (prefix + kPackageTensors)};
}

std::string model_content_hash(const fs::path& model) {
  if (!fs::is_directory(model)) {
    format::ContentHash hash;
    hash.update_field(model.filename().string()).update_file(model);
    return hash.hex();
  }
  const fs::path& dir = model;
  // The files that decide what the transformer answers, in a fixed order.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool weights = entry.path().extension() == ".safetensors" || name == "model.safetensors.index.json";
    if (name.starts_with("skim.")) continue;
    if (weights || name == "config.json" || name == "vocab.txt" || name == "tokenizer.json" || name == "tokenizer_config.json")
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  format::ContentHash hash;
  for (const auto& name : names) hash.update_field(name).update_file(dir / name);
  return hash.hex();
}

std::string proposer_stack_version(const propose::NgramClassifier& proposer, const propose::RuleSet& rules) {
  return proposer.version() + "+" + rules.version();
}

namespace {

std::string mod_tensor_name(int layer) { return "mod.layer." + std::to_string(layer) + ".weight"; }

nlohmann::json mod_json(const execute::mod::Routing& routing, const nlohmann::json& fit) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& b : routing.blocks)
    layers.push_back({{"layer", b.layer}, {"capacity", b.capacity}, {"bias", b.bias},
                      {"threshold", b.threshold}, {"oracle_threshold", b.oracle_threshold}});
  return {{"semantics", "post_hoc"}, {"layers", layers}, {"fit", fit}};
}

// The "mod" section and its tensors, checked against the model's shape.
execute::mod::Routing mod_from(const nlohmann::json& j, const format::TensorStore& store, const PackageModel& model,
                               const std::string& where) {
  execute::mod::Routing routing;
  std::string field = "mod.semantics";
  try {
    const auto semantics = j.at("semantics").get<std::string>();
    if (semantics != "post_hoc")
      throw std::invalid_argument("\"" + semantics + "\" is not supported (this skim runs post_hoc)");
    field = "mod.layers";
    int previous = -1;
    for (const auto& entry : j.at("layers")) {
      execute::mod::BlockRouter b;
      b.layer = entry.at("layer").get<int>();
      b.capacity = entry.at("capacity").get<double>();
      b.bias = entry.at("bias").get<float>();
      // Decoders' causal thresholds (encoders route by top-k and ignore them).
      b.threshold = entry.value("threshold", 0.f);
      b.oracle_threshold = entry.value("oracle_threshold", 0.f);
      field = "mod.layers[" + std::to_string(routing.blocks.size()) + "]";
      if (b.layer < 0 || b.layer >= model.layers)
        throw std::invalid_argument("layer " + std::to_string(b.layer) + " is outside the model's " +
                                    std::to_string(model.layers) + " layers");
      if (b.layer <= previous) throw std::invalid_argument("layers must be listed once each, ascending");
      if (!(b.capacity > 0 && b.capacity <= 1))
        throw std::invalid_argument("capacity " + std::to_string(b.capacity) + " is outside (0, 1]");
      if (!std::isfinite(b.bias) || !std::isfinite(b.threshold) || !std::isfinite(b.oracle_threshold))
        throw std::invalid_argument("bias or threshold is not finite");
      previous = b.layer;
      routing.blocks.push_back(std::move(b));
      field = "mod.layers";
    }
  } catch (const std::exception& e) {
    throw Error(ErrorCode::format, where + ": field \"" + field + "\": " + e.what());
  }
  for (auto& b : routing.blocks) {
    const auto& t = require_tensor(store, mod_tensor_name(b.layer), format::DType::f32);
    if (t.shape != std::vector<std::int64_t>{model.hidden_size})
      throw Error(ErrorCode::model, store.source() + ": tensor '" + t.name + "' has shape " + t.shape_string() +
                                        ", the model's hidden size is " + std::to_string(model.hidden_size));
    b.weight = format::to_f32(t);
    for (float w : b.weight)
      if (!std::isfinite(w)) throw Error(ErrorCode::format, store.source() + ": tensor '" + t.name + "' is not finite");
  }
  return routing;
}

std::string acm_tensor_name(int layer, const char* part) {
  return "acm.layer." + std::to_string(layer) + "." + part;
}

std::string acm_refit_name(int layer, std::int64_t learners) {
  return acm_tensor_name(layer, "refit.") + std::to_string(learners);
}

std::string acm_learner_tensor_name(int layer, int learner, const char* part) {
  return "acm.layer." + std::to_string(layer) + ".learner." + std::to_string(learner) + "." + part;
}

// A package's learners are all a partition of the model's FFNs or all
// trained ("distilled": each learner its own weights).
bool acm_distilled(const execute::acm::WidthSpec& spec) {
  const bool distilled = !spec.layers.empty() && !spec.layers.front().learner_weights.empty();
  for (const auto& l : spec.layers)
    if (l.learner_weights.empty() == distilled)
      throw Error(ErrorCode::internal, "write_package: ACM layers mix partition and distilled learners");
  return distilled;
}

nlohmann::json acm_json(const execute::acm::WidthSpec& spec, const nlohmann::json& fit) {
  nlohmann::json layers = nlohmann::json::array(), grid = nlohmann::json::array();
  for (const auto& l : spec.layers) layers.push_back({{"layer", l.layer}, {"learners", l.learners}});
  for (const auto& b : spec.budgets)
    grid.push_back({{"budget", b.budget}, {"log_epsilon", b.log_epsilon}, {"oracle_log_epsilon", b.oracle_log_epsilon}});  // per layer
  const bool refit = !spec.layers.empty() && !spec.layers.front().refit_down.empty();
  return {{"learners", acm_distilled(spec) ? "distilled" : "partition"},
          {"down_projection", refit ? "least_squares_refit" : "partition"},
          {"gate", "ridge_log_error"},
          {"budget", spec.budget},
          {"layers", layers},
          {"budget_grid", grid},
          {"fit", fit}};
}

template <typename T>
std::vector<T> checked_tensor(const format::TensorStore& store, const std::string& name, format::DType dtype,
                              const std::vector<std::int64_t>& shape) {
  const auto& t = require_tensor(store, name, dtype);
  if (t.shape != shape) {
    std::string want;
    for (auto d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
    throw Error(ErrorCode::model, store.source() + ": tensor '" + name + "' has shape " + t.shape_string() +
                                      ", this model needs [" + want + "]");
  }
  std::vector<T> values(static_cast<std::size_t>(t.numel()));
  std::memcpy(values.data(), t.bytes.data(), values.size() * sizeof(T));
  if constexpr (std::is_floating_point_v<T>)
    for (T v : values)
      if (!std::isfinite(v)) throw Error(ErrorCode::format, store.source() + ": tensor '" + name + "' is not finite");
  return values;
}

// A distilled learner's tensor, F16 or F32, of the given shape (a negative
// entry: any size ≥ 1, returned in `free`), finite, as f32.
std::vector<float> learner_tensor(const format::TensorStore& store, const std::string& name,
                                  const std::vector<std::int64_t>& shape, std::int64_t* free, const std::string& needs) {
  const format::TensorView* t = store.find(name);
  if (t == nullptr) throw Error(ErrorCode::format, store.source() + ": no tensor '" + name + "'");
  if (t->dtype != format::DType::f16 && t->dtype != format::DType::f32)
    throw Error(ErrorCode::format, store.source() + ": tensor '" + name + "' is " + std::string(format::to_string(t->dtype)) +
                                       ", expected F16 or F32");
  bool fits = t->shape.size() == shape.size();
  for (std::size_t d = 0; fits && d < shape.size(); ++d) {
    if (shape[d] >= 0) fits = t->shape[d] == shape[d];
    else if ((fits = t->shape[d] >= 1)) *free = t->shape[d];
  }
  if (!fits)
    throw Error(ErrorCode::model, store.source() + ": tensor '" + name + "' has shape " + t->shape_string() + ", " + needs);
  std::vector<float> values = format::to_f32(*t);
  for (float v : values)
    if (!std::isfinite(v)) throw Error(ErrorCode::format, store.source() + ": tensor '" + name + "' is not finite");
  return values;
}

// Layer `layer`'s N trained learners: acm.layer.L.learner.I.{up.weight [w_I,
// H], up.bias [w_I] (optional), down.weight [H, w_I], down.bias [H]
// (optional)}, and no tensors of learners past N. SwiGLU: up.weight is the
// learner's gate rows then its up rows, [2·w_I, H], and there is no up.bias.
std::vector<execute::acm::FfnWeights> distilled_learners(const format::TensorStore& store, int layer, int learners,
                                                         std::int64_t H, execute::acm::Activation activation,
                                                         const std::string& listed) {
  const bool swiglu = activation == execute::acm::Activation::swiglu;
  const std::string prefix = "acm.layer." + std::to_string(layer) + ".learner.";
  for (const auto& name : store.names()) {
    if (!name.starts_with(prefix)) continue;
    const std::string rest = name.substr(prefix.size());
    const std::size_t dot = rest.find('.');
    int index = -1;
    try {
      index = std::stoi(rest.substr(0, dot));
    } catch (const std::exception&) {
    }
    if (index < 0 || index >= learners)
      throw Error(ErrorCode::model, store.source() + ": tensor '" + name + "' is not one of the " +
                                        std::to_string(learners) + " learners " + listed + " lists");
  }
  const std::string hidden = "the model's hidden size is " + std::to_string(H);
  std::vector<execute::acm::FfnWeights> out;  // grown as found: `learners` is not trusted yet
  for (int i = 0; i < learners; ++i) {
    auto& w = out.emplace_back();
    std::int64_t width = 0;
    const std::string up_name = acm_learner_tensor_name(layer, i, "up.weight");
    w.up = learner_tensor(store, up_name, {-1, H}, &width,
                          swiglu ? "expected [2 × width, " + std::to_string(H) + "] (gate rows, then up rows): " + hidden
                                 : "expected [width, " + std::to_string(H) + "]: " + hidden);
    if (swiglu) {
      if (width % 2 != 0)
        throw Error(ErrorCode::model, store.source() + ": tensor '" + up_name + "' has " + std::to_string(width) +
                                          " rows; a SwiGLU learner's up is its gate rows then its up rows, an even number");
      width /= 2;
      if (store.find(acm_learner_tensor_name(layer, i, "up.bias")))
        throw Error(ErrorCode::model, store.source() + ": tensor '" + acm_learner_tensor_name(layer, i, "up.bias") +
                                          "': this model's FFNs are SwiGLU, whose learners take no up bias");
    }
    const std::string dims = "learner " + std::to_string(i) + " is " + std::to_string(width) + " wide and " + hidden;
    w.down = learner_tensor(store, acm_learner_tensor_name(layer, i, "down.weight"), {H, width}, nullptr,
                            "expected [" + std::to_string(H) + ", " + std::to_string(width) + "]: " + dims);
    if (store.find(acm_learner_tensor_name(layer, i, "up.bias")))
      w.up_bias = learner_tensor(store, acm_learner_tensor_name(layer, i, "up.bias"), {width}, nullptr,
                                 "expected [" + std::to_string(width) + "]: " + dims);
    if (store.find(acm_learner_tensor_name(layer, i, "down.bias")))
      w.down_bias = learner_tensor(store, acm_learner_tensor_name(layer, i, "down.bias"), {H}, nullptr,
                                   "expected [" + std::to_string(H) + "]: " + hidden);
  }
  return out;
}

// The "acm" section and its tensors, checked against the model's shape.
execute::acm::WidthSpec acm_from(const nlohmann::json& j, const format::TensorStore& store, const PackageModel& model,
                                 const std::string& where) {
  execute::acm::WidthSpec spec;
  std::string field = "acm.learners";
  bool distilled = false, refit = false;
  try {
    const auto learners = j.at("learners").get<std::string>();
    if (learners != "partition" && learners != "distilled")
      throw std::invalid_argument("\"" + learners + "\" is not supported (partition or distilled)");
    distilled = learners == "distilled";
    field = "acm.down_projection";
    const std::string down = j.value("down_projection", "partition");
    if (down != "partition" && down != "least_squares_refit")
      throw std::invalid_argument("\"" + down + "\" is not partition or least_squares_refit");
    refit = down == "least_squares_refit";
    if (refit && distilled) throw std::invalid_argument("a refit applies to partitioned learners only");
    field = "acm.gate";
    if (j.at("gate").get<std::string>() != "ridge_log_error")
      throw std::invalid_argument("\"" + j.at("gate").get<std::string>() + "\" is not supported (only ridge_log_error)");
    field = "acm.budget";
    spec.budget = j.at("budget").get<double>();
    if (!(spec.budget > 0 && spec.budget <= 1))
      throw std::invalid_argument(std::to_string(spec.budget) + " is outside (0, 1]");
    field = "acm.budget_grid";
    for (const auto& b : j.at("budget_grid")) {
      execute::acm::BudgetPoint point{b.at("budget").get<double>(), b.at("log_epsilon").get<std::vector<float>>(),
                                      b.at("oracle_log_epsilon").get<std::vector<float>>()};
      if (!(point.budget > 0 && point.budget <= 1) || (!spec.budgets.empty() && point.budget <= spec.budgets.back().budget))
        throw std::invalid_argument("budgets must lie in (0, 1], ascending");
      if (point.log_epsilon.size() != j.at("layers").size() || point.oracle_log_epsilon.size() != j.at("layers").size())
        throw std::invalid_argument("each budget needs one log_epsilon and one oracle_log_epsilon per layer");
      spec.budgets.push_back(point);
    }
    field = "acm.layers";
    int previous = -1;
    for (const auto& entry : j.at("layers")) {
      execute::acm::LayerSpec l;
      l.layer = entry.at("layer").get<int>();
      l.learners = entry.at("learners").get<int>();
      field = "acm.layers[" + std::to_string(spec.layers.size()) + "]";
      if (l.layer < 0 || l.layer >= model.layers)
        throw std::invalid_argument("layer " + std::to_string(l.layer) + " is outside the model's " +
                                    std::to_string(model.layers) + " layers");
      if (l.layer <= previous) throw std::invalid_argument("layers must be listed once each, ascending");
      if (l.learners < 1 || (!distilled && l.learners > model.ffn_size))
        throw std::invalid_argument(std::to_string(l.learners) + " learners for an FFN of width " +
                                    std::to_string(model.ffn_size));
      previous = l.layer;
      spec.layers.push_back(std::move(l));
      field = "acm.layers";
    }
  } catch (const std::exception& e) {
    throw Error(ErrorCode::format, where + ": field \"" + field + "\": " + e.what());
  }
  const std::int64_t H = model.hidden_size, F = model.ffn_size;
  for (std::size_t i = 0; i < spec.layers.size(); ++i) {
    auto& l = spec.layers[i];
    const std::int64_t N = l.learners;
    if (distilled) {
      l.learner_weights =
          distilled_learners(store, l.layer, l.learners, H, model.activation, where + " acm.layers[" + std::to_string(i) + "]");
    } else {
      l.order = checked_tensor<std::int32_t>(store, acm_tensor_name(l.layer, "order"), format::DType::i32, {F});
      std::vector<char> seen(F, 0);
      for (int n : l.order) {
        if (n < 0 || n >= F || seen[n])
          throw Error(ErrorCode::model, store.source() + ": tensor '" + acm_tensor_name(l.layer, "order") +
                                            "' is not a permutation of the FFN's " + std::to_string(F) + " neurons");
        seen[n] = 1;
      }
    }
    l.gate_weight = checked_tensor<float>(store, acm_tensor_name(l.layer, "gate.weight"), format::DType::f32, {N, H});
    l.gate_bias = checked_tensor<float>(store, acm_tensor_name(l.layer, "gate.bias"), format::DType::f32, {N});
    l.corrections = checked_tensor<float>(store, acm_tensor_name(l.layer, "corrections"), format::DType::f32, {N + 1, H});
    // Prefix k's neurons: the first k of N near-equal groups (FfnLearners' partition).
    for (std::int64_t k = 1; refit && k < N; ++k)
      l.refit_down.push_back(checked_tensor<float>(store, acm_refit_name(l.layer, k), format::DType::f32, {H, F * k / N}));
  }
  return spec;
}

}  // namespace

void write_package(const PackageFiles& files, const RouterPackage& p) {
  if (!p.proposer && !p.mod && !p.acm)
    throw Error(ErrorCode::internal, "write_package: neither a proposer nor MoD routers nor ACM gates");
  std::vector<std::vector<std::uint16_t>> f16_storage;
  f16_storage.reserve(1);  // the tensors below point into it
  std::vector<format::TensorToWrite> tensors;
  nlohmann::json j = {{"format", "skim-package"},
                      {"format_version", kPackageFormatVersion},
                      {"model_hash", p.model_hash},
                      {"labels", p.labels}};
  if (p.proposer) {
    const auto& arrays = p.proposer->arrays();
    const auto meta = p.proposer->metadata();
    const auto& embeddings = f16_storage.emplace_back(to_f16_bits(arrays.embeddings));
    const std::int64_t labels = static_cast<std::int64_t>(p.proposer->labels());
    const std::int64_t buckets = meta.at("buckets").get<std::int64_t>(), dim = meta.at("dim").get<std::int64_t>();
    tensors.push_back({"ngram.embeddings", format::DType::f16, {buckets, dim}, bytes_of(embeddings)});
    tensors.push_back({"ngram.output", format::DType::f32, {labels, dim}, bytes_of(arrays.output)});
    tensors.push_back({"ngram.bias", format::DType::f32, {labels}, bytes_of(arrays.bias)});
    tensors.push_back({"ngram.fingerprints", format::DType::u64, {static_cast<std::int64_t>(arrays.fingerprints.size())},
                       bytes_of(arrays.fingerprints)});
    j["proposer"] = meta;
    j["proposer_version"] = p.proposer->version();
    j["rules"] = p.rules.to_json();
    j["never_cache"] = p.never_cache;
    j["certificate"] = certificate_json(p.certificate);
    j["calibration"] = p.calibration;
  }
  if (p.mod) {
    for (const auto& b : p.mod->blocks)
      tensors.push_back({mod_tensor_name(b.layer), format::DType::f32, {static_cast<std::int64_t>(b.weight.size())},
                         bytes_of(b.weight)});
    j["mod"] = mod_json(*p.mod, p.mod_fit);
  }
  if (p.acm) {
    for (const auto& l : p.acm->layers) {
      const std::int64_t N = l.learners, H = static_cast<std::int64_t>(l.gate_weight.size()) / std::max<std::int64_t>(N, 1);
      if (l.learner_weights.empty())
        tensors.push_back({acm_tensor_name(l.layer, "order"), format::DType::i32,
                           {static_cast<std::int64_t>(l.order.size())}, bytes_of(l.order)});
      for (std::size_t i = 0; i < l.learner_weights.size(); ++i) {
        const auto& w = l.learner_weights[i];
        const std::int64_t width = static_cast<std::int64_t>(w.down.size()) / std::max<std::int64_t>(H, 1);
        const int learner = static_cast<int>(i);
        tensors.push_back({acm_learner_tensor_name(l.layer, learner, "up.weight"), format::DType::f32,
                           {static_cast<std::int64_t>(w.up.size()) / std::max<std::int64_t>(H, 1), H}, bytes_of(w.up)});
        if (!w.up_bias.empty())
          tensors.push_back({acm_learner_tensor_name(l.layer, learner, "up.bias"), format::DType::f32,
                             {static_cast<std::int64_t>(w.up_bias.size())}, bytes_of(w.up_bias)});
        tensors.push_back({acm_learner_tensor_name(l.layer, learner, "down.weight"), format::DType::f32, {H, width},
                           bytes_of(w.down)});
        if (!w.down_bias.empty())
          tensors.push_back({acm_learner_tensor_name(l.layer, learner, "down.bias"), format::DType::f32, {H},
                             bytes_of(w.down_bias)});
      }
      tensors.push_back({acm_tensor_name(l.layer, "gate.weight"), format::DType::f32, {N, H}, bytes_of(l.gate_weight)});
      tensors.push_back({acm_tensor_name(l.layer, "gate.bias"), format::DType::f32, {N}, bytes_of(l.gate_bias)});
      tensors.push_back({acm_tensor_name(l.layer, "corrections"), format::DType::f32, {N + 1, H}, bytes_of(l.corrections)});
      for (std::size_t k = 1; k <= l.refit_down.size(); ++k)
        tensors.push_back({acm_refit_name(l.layer, static_cast<std::int64_t>(k)), format::DType::f32,
                           {H, static_cast<std::int64_t>(l.refit_down[k - 1].size()) / H}, bytes_of(l.refit_down[k - 1])});
    }
    j["acm"] = acm_json(*p.acm, p.acm_fit);
  }
  format::write_safetensors(files.tensors, tensors, {{"format", "skim-package"}});
  const std::string text = j.dump(1) + "\n";
  const fs::path& path = files.json;
  format::TemporaryFile file(format::temporary_path_for(path));
  file.open(path.string());
  file.write(path.string(), text.data(), text.size());
  file.commit(path.string());
}

RouterPackage read_package(const PackageFiles& files, const PackageModel& model) {
  const fs::path& json_path = files.json;
  const std::string where = json_path.string();
  std::ifstream in(json_path);
  if (!in) throw Error(ErrorCode::io, where + ": cannot open");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::format, where + ": not a JSON object");
  RouterPackage p;
  std::string field;
  try {
    field = "format";
    if (j.at("format").get<std::string>() != "skim-package") throw std::invalid_argument("not \"skim-package\"");
    field = "format_version";
    if (j.at("format_version").get<int>() != kPackageFormatVersion)
      throw std::invalid_argument("this skim reads version " + std::to_string(kPackageFormatVersion));
    field = "model_hash";
    p.model_hash = j.at("model_hash").get<std::string>();
    field = "labels";
    p.labels = j.at("labels").get<std::vector<std::string>>();
    if (j.contains("proposer")) {
      field = "never_cache";
      p.never_cache = j.at("never_cache").get<std::vector<std::string>>();
      field = "certificate";
      p.certificate = certificate_from(j.at("certificate"));
      field = "calibration";
      p.calibration = j.value("calibration", nlohmann::json::object());
    } else if (!j.contains("mod") && !j.contains("acm")) {
      field = "proposer";
      throw std::invalid_argument("missing: the package holds neither a proposer nor MoD routers nor ACM gates");
    }
  } catch (const std::exception& e) {
    throw Error(ErrorCode::format, where + ": field \"" + field + "\": " + e.what());
  }
  if (p.model_hash != model.hash)
    throw Error(ErrorCode::model, where + " was made for another model (model hash " + p.model_hash + ", this model's is " +
                                      model.hash + "): rerun skim-calibrate for this model");
  if (!std::equal(p.labels.begin(), p.labels.end(), model.labels.begin(), model.labels.end()))
    throw Error(ErrorCode::model, where + ": its labels differ from the model's id2label");

  const fs::path& tensors_path = files.tensors;
  auto store = format::TensorStore::open_file(tensors_path);
  if (j.contains("mod")) {
    p.mod = mod_from(j["mod"], store, model, where);
    p.mod_fit = j["mod"].value("fit", nlohmann::json::object());
  }
  if (j.contains("acm")) {
    p.acm = acm_from(j["acm"], store, model, where);
    p.acm_fit = j["acm"].value("fit", nlohmann::json::object());
  }
  if (!j.contains("proposer")) return p;

  for (const auto& label : p.never_cache)
    if (std::find(p.labels.begin(), p.labels.end(), label) == p.labels.end())
      throw Error(ErrorCode::format, where + ": never_cache label \"" + label + "\" is not one of the model's labels");
  if (!j.contains("rules")) throw Error(ErrorCode::format, where + ": no field \"rules\"");
  try {
    p.rules = propose::RuleSet::from_json(j["rules"], p.labels);
  } catch (const Error& e) {
    throw Error(e.code(), where + ": rules: " + e.what());
  }
  propose::NgramArrays arrays;
  arrays.embeddings = format::to_f32(require_tensor(store, "ngram.embeddings", format::DType::f16));
  arrays.output = format::to_f32(require_tensor(store, "ngram.output", format::DType::f32));
  arrays.bias = format::to_f32(require_tensor(store, "ngram.bias", format::DType::f32));
  arrays.fingerprints = u64_values(require_tensor(store, "ngram.fingerprints", format::DType::u64));
  try {
    p.proposer.emplace(std::move(arrays), j["proposer"]);
  } catch (const Error& e) {
    throw Error(e.code(), tensors_path.string() + " with " + where + ": " + e.what());
  }
  if (p.proposer->labels() != p.labels.size())
    throw Error(ErrorCode::format, where + ": the proposer has " + std::to_string(p.proposer->labels()) + " labels, the model " +
                                       std::to_string(p.labels.size()));
  const std::string version = proposer_stack_version(*p.proposer, p.rules);
  if (p.certificate.proposer_version != version) {
    // A certificate speaks only for the proposer it was computed with.
    p.certificate.certified = false;
    p.certificate.reason = "void: computed for proposer " + p.certificate.proposer_version + ", the package's is " + version;
  }
  return p;
}

namespace {

gate::MonitorOptions monitor_options(const RouterPackage& p, const Options& options) {
  gate::MonitorOptions m;
  m.shadow_rate = options.shadow_rate();
  m.alpha = options.alarm_level();
  // Recalibrate on as many fresh samples as the certificate was computed on,
  // and never on fewer than 1000 (a window that small can hardly certify).
  m.recalibration_samples = std::max<std::size_t>(p.certificate.n, 1000);
  m.certify.epsilon = p.certificate.epsilon;
  m.certify.delta = p.certificate.delta;
  m.certify.risk = p.certificate.risk;
  m.certify.per_label = !p.certificate.label_thresholds.empty();
  m.certify.labels = m.certify.per_label ? p.labels.size() : 0;
  return m;
}

propose::ResponseCacheOptions cache_options(const RouterPackage& p, const Options& options) {
  propose::ResponseCacheOptions c;
  c.byte_budget = options.cache_bytes();
  for (const auto& label : p.never_cache)
    c.never_cache.insert(static_cast<int>(std::find(p.labels.begin(), p.labels.end(), label) - p.labels.begin()));
  return c;
}

}  // namespace

Router::Router(RouterPackage package, const Options& options)
    : package_(std::move(package)),
      version_(package_.model_hash + "/" + proposer_stack_version(*package_.proposer, package_.rules)),
      cache_(cache_options(package_, options), version_),
      monitor_(package_.certificate, monitor_options(package_, options)) {}

std::string Router::request_id(const Request& request, std::size_t index, std::size_t count) const {
  if (request.id().empty()) return "skim-" + std::to_string(next_request_.fetch_add(1, std::memory_order_relaxed));
  return count == 1 ? request.id() : request.id() + "#" + std::to_string(index);
}

RouterStats Router::stats() const {
  const gate::MonitorStats m = monitor_.stats();
  RouterStats s;
  s.state = m.state;
  s.calls = calls.load(std::memory_order_relaxed);
  s.transformer_calls = transformer_calls.load(std::memory_order_relaxed);
  s.cache_hits = cache_hits.load(std::memory_order_relaxed);
  s.rule_hits = rule_hits.load(std::memory_order_relaxed);
  s.accepted = m.accepted;
  s.shadowed = shadowed.load(std::memory_order_relaxed);
  s.shadow_disagreements = shadow_disagreements.load(std::memory_order_relaxed);
  s.live_disagreement = m.disagreement_rate;
  s.live_upper_bound = m.disagreement_upper_bound;
  s.e_value = std::exp(m.log_e_value);
  s.alarms = m.alarms;
  s.recalibrations = m.recalibrations;
  s.certificate = m.certificate;
  return s;
}

}  // namespace skim
