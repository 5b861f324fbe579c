// qwha-bench: benchmarks of the QWHA numerical core, each printing a table
// (or, with --json, one JSON object). Ratios are measured side by side in one
// run, ours against a reference on the same inputs.
//
//   qwha-bench init-error  [--bits 2,3,4] [--quant rtn|gptq]
//   qwha-bench fwht        (CUDA: bandwidth vs a device-to-device copy)
//   qwha-bench layer       (fwd+bwd of one adapted linear layer: base, LoRA, QWHA)
//   qwha-bench init-time   (QWHA initialization per layer; per-channel loop reference)
// Common flags: --device cpu|cuda (default: cuda if available), --json,
// --json-out FILE (text on stdout, JSON to FILE),
// --quick (small shapes, for a smoke run on a CPU).
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/fwht.h"
#include "kernels/spectrum.h"
#include "worker/adapters/adapted_linear.h"
#include "worker/adapters/adapter.h"
#include "worker/adapters/qwha.h"
#include "worker/bench/bench_util.h"
#include "worker/quant/quantizer.h"
#include "worker/testing/synthetic.h"

namespace qwha::bench {
namespace {

struct Flags {
  std::string command;
  torch::Device device = torch::kCPU;
  bool json = false;
  std::string json_out;  // also write the JSON object to this file
  bool quick = false;
  std::vector<int> bits = {2, 3, 4};
  quant::QuantMethod quant = quant::QuantMethod::kRtn;
  int64_t rank = 64;
};

[[noreturn]] void Usage(const std::string& error) {
  std::cerr
      << "qwha-bench: " << error << "\n"
      << "usage: qwha-bench {init-error|fwht|layer|init-time} [--device cpu|cuda] "
         "[--json] [--json-out FILE] [--quick] [--bits 2,3,4] [--quant rtn|gptq] [--rank 64]\n";
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  if (argc < 2) Usage("missing subcommand");
  f.command = argv[1];
  f.device = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::kCPU;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage("flag " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") {
      f.json = true;
    } else if (a == "--json-out") {
      f.json_out = value();
    } else if (a == "--quick") {
      f.quick = true;
    } else if (a == "--device") {
      std::string d = value();
      if (d == "cpu") {
        f.device = torch::kCPU;
      } else if (d == "cuda") {
        if (!torch::cuda::is_available()) Usage("--device cuda: no CUDA device");
        f.device = torch::Device(torch::kCUDA);
      } else {
        Usage("--device: expected cpu or cuda, got '" + d + "'");
      }
    } else if (a == "--bits") {
      f.bits.clear();
      std::string list = value();
      size_t pos = 0;
      while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string item = list.substr(pos, comma == std::string::npos ? comma : comma - pos);
        int b = std::atoi(item.c_str());
        if (b < 2 || b > 4) Usage("--bits: each entry must be 2, 3 or 4, got '" + item + "'");
        f.bits.push_back(b);
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    } else if (a == "--quant") {
      auto m = quant::ParseQuantMethod(value());
      if (!m.ok()) Usage(std::string(m.status().message()));
      f.quant = *m;
    } else if (a == "--rank") {
      f.rank = std::atoll(value().c_str());
      if (f.rank <= 0) Usage("--rank must be positive");
    } else {
      Usage("unknown flag '" + a + "'");
    }
  }
  return f;
}

template <typename T>
T OrDie(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::cerr << "qwha-bench: " << what << ": " << v.status() << "\n";
    std::exit(1);
  }
  return std::move(*v);
}

// ---------------------------------------------------------------- init-error
Table InitError(const Flags& f) {
  struct Shape {
    int64_t out, in;
  };
  std::vector<Shape> shapes = f.quick
                                  ? std::vector<Shape>{{64, 128}}
                                  : std::vector<Shape>{{2048, 2048}, {8192, 2048}, {2048, 8192}};
  const int64_t rank = f.quick ? 4 : f.rank;
  Table table(
      "init-error: relative layer-output error ‖X(W−deq(Q)−ΔW)ᵀ‖/‖XWᵀ‖ after "
      "initialization (lower is better), budget r=" +
          std::to_string(rank) + " equivalent, quantizer " + quant::QuantMethodName(f.quant),
      {"layer", "bits", "none", "lora", "loftq", "cloq", "random-wht", "qwha-datafree", "qwha",
       "best"});
  const std::vector<adapters::AdapterType> types = {
      adapters::AdapterType::kLora,         adapters::AdapterType::kLoftq,
      adapters::AdapterType::kCloq,         adapters::AdapterType::kRandomWht,
      adapters::AdapterType::kQwhaDataFree, adapters::AdapterType::kQwha};
  for (const auto& s : shapes) {
    testing::SyntheticLayerOptions opt;
    opt.out_features = s.out;
    opt.in_features = s.in;
    opt.tokens = f.quick ? 512 : 8192;
    opt.seed = 1;
    auto layer = testing::MakeSyntheticLayer(opt, f.device);
    torch::Tensor x64 = layer.inputs.to(torch::kFloat64);
    torch::Tensor gram = torch::matmul(x64.t(), x64);
    for (int bits : f.bits) {
      quant::QuantConfig qc;
      qc.bits = bits;
      qc.method = f.quant;
      auto q = OrDie(quant::Quantize(layer.weight, gram, qc), "quantize");
      adapters::LayerData data{layer.weight, quant::Dequantize(q), gram};
      std::vector<nlohmann::json> row = {std::to_string(s.in) + "->" + std::to_string(s.out), bits,
                                         adapters::RelativeOutputError(data, {})};
      std::string best = "none";
      double best_err = row[2].get<double>();
      for (auto type : types) {
        adapters::AdapterConfig ac;
        ac.type = type;
        ac.rank = rank;
        auto adapter = OrDie(adapters::InitializeAdapter(ac, data), "initialize adapter");
        torch::NoGradGuard no_grad;
        double err = adapters::RelativeOutputError(data, adapter->DeltaWeight());
        row.push_back(err);
        if (err < best_err) {
          best_err = err;
          best = adapters::AdapterTypeName(type);
        }
      }
      row.push_back(best);
      table.AddRow(row);
    }
  }
  return table;
}

// ---------------------------------------------------------------------- fwht
Table FwhtBandwidth(const Flags& f) {
  Table table(
      "fwht: bf16 FWHT along rows, effective bandwidth (bytes read + written) vs a "
      "device-to-device copy of the same tensor in the same run; reference: dense "
      "bf16 GEMM x·H",
      {"n", "rows", "fwht_ms", "fwht_GBps", "copy_GBps", "fwht/copy", "gemm_ms",
       "speedup_vs_gemm"});
  std::vector<int64_t> sizes =
      f.quick ? std::vector<int64_t>{256, 768}
              : std::vector<int64_t>{2048, 4096, 8192, 16384, 3072, 11008, 14336};
  const int64_t total = f.quick ? (1 << 16) : (int64_t{1} << 26);  // elements (128 MiB bf16)
  for (int64_t n : sizes) {
    const int64_t rows = total / n;
    auto opts = torch::dtype(torch::kBFloat16).device(f.device);
    torch::Tensor x = torch::randn({rows, n}, opts);
    torch::Tensor y = torch::empty_like(x);
    const double bytes = 2.0 * static_cast<double>(x.numel()) * 2.0;
    double t_fwht = MedianMillis(f.device, [&] { y = kernels::Fwht(x, 1.0 / std::sqrt(n)); });
    double t_copy = MedianMillis(f.device, [&] { y.copy_(x); });
    torch::Tensor h = kernels::HadamardMatrix(n, torch::kFloat32).to(f.device, torch::kBFloat16);
    double t_gemm = MedianMillis(f.device, [&] { y = torch::matmul(x, h); }, {2, 5});
    table.AddRow({n, rows, t_fwht, bytes / t_fwht / 1e6, bytes / t_copy / 1e6, t_copy / t_fwht,
                  t_gemm, t_gemm / t_fwht});
  }
  return table;
}

// --------------------------------------------------------------------- layer
Table LayerTime(const Flags& f) {
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  std::vector<Shape> shapes = f.quick ? std::vector<Shape>{{"q_proj-like", 256, 256}}
                                      : std::vector<Shape>{{"attn 2048x2048", 2048, 2048},
                                                           {"mlp up 2048->8192", 2048, 8192},
                                                           {"mlp down 8192->2048", 8192, 2048}};
  const int64_t tokens = f.quick ? 256 : 8192;
  const auto dtype = f.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  Table table("layer: forward+backward of one adapted linear layer, " + std::to_string(tokens) +
                  " tokens, 4-bit base, budget r=" + std::to_string(f.rank) +
                  " equivalent, x requires grad",
              {"layer", "base_ms", "lora_ms", "qwha_ms", "qwha/lora", "qwha/base"});
  for (const auto& s : shapes) {
    testing::SyntheticLayerOptions opt;
    opt.out_features = s.out;
    opt.in_features = s.in;
    opt.tokens = 16;
    auto layer = testing::MakeSyntheticLayer(opt, f.device);
    quant::QuantConfig qc;
    qc.bits = 4;
    auto q = OrDie(quant::QuantizeRtn(layer.weight, qc), "quantize");
    adapters::LayerData data{layer.weight, quant::Dequantize(q), torch::Tensor()};
    adapters::AdapterConfig lc;
    lc.type = adapters::AdapterType::kLora;
    lc.rank = f.rank;
    auto lora = OrDie(adapters::InitializeAdapter(lc, data), "lora");
    lora->To(f.device, dtype);
    adapters::AdapterConfig qwc;
    qwc.type = adapters::AdapterType::kQwhaDataFree;
    qwc.rank = f.rank;
    auto qwha = OrDie(adapters::InitializeAdapter(qwc, data), "qwha");
    // Both adapters hold their parameters in the compute dtype, as in bf16 training.
    qwha->To(f.device, dtype);
    torch::Tensor x =
        torch::randn({tokens, s.in}, torch::dtype(dtype).device(f.device)).requires_grad_(true);
    torch::Tensor gy = torch::randn({tokens, s.out}, torch::dtype(dtype).device(f.device));
    auto step = [&](const std::function<torch::Tensor()>& forward) {
      x.mutable_grad() = torch::Tensor();
      torch::Tensor y = forward();
      y.backward(gy);
    };
    double t_base = MedianMillis(
        f.device, [&] { step([&] { return adapters::MergedLinear(x, q, {}, dtype); }); });
    double t_lora = MedianMillis(
        f.device, [&] { step([&] { return adapters::UnmergedLinear(x, q, lora.get(), dtype); }); });
    double t_qwha = MedianMillis(f.device, [&] {
      step([&] { return adapters::MergedLinear(x, q, qwha->DeltaWeight(), dtype); });
    });
    table.AddRow({s.name, t_base, t_lora, t_qwha, t_qwha / t_lora, t_qwha / t_base});
  }
  return table;
}

// ----------------------------------------------------------------- init-time
// Reference: the same initialization with step 4 done as a per-channel loop
// (one small Cholesky solve per output channel), the way a straightforward
// port of the method would do it. Steps 1-3 use the same library functions.
double PerChannelLoopMillis(const torch::Device& device, const adapters::AdapterConfig& cfg,
                            const adapters::LayerData& data) {
  const int64_t out = data.weight.size(0), n = data.weight.size(1);
  const auto work = device.is_cuda() ? torch::kFloat32 : torch::kFloat64;
  return MedianMillis(
      device,
      [&] {
        torch::Tensor e = data.weight.to(torch::kFloat64) - data.dequantized.to(torch::kFloat64);
        torch::Tensor g = data.gram.to(torch::kFloat64);
        g = g + cfg.damp * g.diagonal().mean() * torch::eye(n, g.options());
        torch::Tensor counts =
            OrDie(adapters::AdaAlloc(e.norm(2, {1}), adapters::BudgetParams(cfg, out, n), n,
                                     cfg.alloc_alpha),
                  "adaalloc");
        torch::Tensor s = OrDie(adapters::ErrorSpectrum(e.to(work)), "spectrum");
        torch::Tensor ghat = OrDie(adapters::SpectralGram(g.to(work)), "spectral gram");
        auto sel = OrDie(adapters::SelectSpectrum(s, ghat.diagonal(), counts), "select");
        torch::Tensor p = kernels::Fwht(e.matmul(g).to(work), 1.0 / double(n), true);
        torch::Tensor ghat64 = ghat.to(torch::kFloat64), p64 = p.to(torch::kFloat64);
        auto counts_acc = counts.accessor<int64_t, 1>();
        for (int64_t o = 0; o < out; ++o) {
          const int64_t k = counts_acc[o];
          if (k == 0) continue;
          torch::Tensor cols = sel.columns[o].slice(0, 0, k);
          torch::Tensor a = ghat64.index_select(0, cols).index_select(1, cols);
          torch::Tensor c = torch::cholesky_solve(p64[o].index_select(0, cols).unsqueeze(1),
                                                  torch::linalg_cholesky(a));
          (void)c;
        }
      },
      {0, 1});
}

Table InitTime(const Flags& f) {
  struct Shape {
    int64_t in, out;
    bool loop_reference;
  };
  std::vector<Shape> shapes = f.quick ? std::vector<Shape>{{128, 128, true}, {192, 64, false}}
                                      : std::vector<Shape>{{2048, 2048, true},
                                                           {4096, 4096, false},
                                                           {4096, 14336, false},
                                                           {14336, 4096, false}};
  Table table(
      "init-time: QWHA initialization (AdaAlloc, selection, batched refinement) per "
      "layer, budget r=" +
          std::to_string(f.rank) + " equivalent; reference: per-channel loop of the same solve",
      {"layer", "N", "qwha_init_s", "per_channel_loop_s", "speedup"});
  for (const auto& s : shapes) {
    testing::SyntheticLayerOptions opt;
    opt.out_features = s.out;
    opt.in_features = s.in;
    opt.tokens = f.quick ? 512 : 4096;
    auto layer = testing::MakeSyntheticLayer(opt, f.device);
    torch::Tensor x64 = layer.inputs.to(torch::kFloat64);
    quant::QuantConfig qc;
    qc.bits = 2;
    auto q = OrDie(quant::QuantizeRtn(layer.weight, qc), "quantize");
    adapters::LayerData data{layer.weight, quant::Dequantize(q), torch::matmul(x64.t(), x64)};
    adapters::AdapterConfig ac;
    ac.type = adapters::AdapterType::kQwha;
    ac.rank = f.rank;
    const int64_t budget = adapters::BudgetParams(ac, s.out, s.in);
    double t_init = MedianMillis(
        f.device, [&] { OrDie(adapters::InitializeAdapter(ac, data), "init"); }, {1, 3});
    nlohmann::json loop = "-", speedup = "-";
    if (s.loop_reference) {
      double t_loop = PerChannelLoopMillis(f.device, ac, data);
      loop = t_loop / 1e3;
      speedup = t_loop / t_init;
    }
    table.AddRow(
        {std::to_string(s.in) + "->" + std::to_string(s.out), budget, t_init / 1e3, loop, speedup});
  }
  return table;
}

int Main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);
  torch::manual_seed(0);
  std::vector<Table> tables;
  if (f.command == "init-error") {
    tables.push_back(InitError(f));
  } else if (f.command == "fwht") {
    tables.push_back(FwhtBandwidth(f));
  } else if (f.command == "layer") {
    tables.push_back(LayerTime(f));
  } else if (f.command == "init-time") {
    tables.push_back(InitTime(f));
  } else {
    Usage("unknown subcommand '" + f.command + "'");
  }
  nlohmann::json out = {{"command", f.command}, {"device", DeviceName(f.device)}};
  out["tables"] = nlohmann::json::array();
  for (const auto& t : tables) out["tables"].push_back(t.ToJson());
  if (!f.json_out.empty()) {
    std::ofstream file(f.json_out);
    file << out.dump(1) << "\n";
    if (!file) {
      std::cerr << "qwha-bench: cannot write --json-out " << f.json_out << "\n";
      return 1;
    }
  }
  if (f.json) {
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "device: " << DeviceName(f.device) << "\n";
    for (const auto& t : tables) std::cout << t.ToText() << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace qwha::bench

int main(int argc, char** argv) { return qwha::bench::Main(argc, argv); }
