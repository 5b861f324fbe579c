// make_peft_fixture: writes the PEFT adapter of tests/fixtures/peft/adapter/
// (run once; scripts/fixtures/make_peft_fixture.py then computes its logits
// with transformers + peft):
//
//   bazel run //worker/pipeline:make_peft_fixture -- $PWD/tests/fixtures/model/llama2
//       $PWD/tests/fixtures/peft/adapter tests/fixtures/model/llama2     (one line)
//
// The adapter is the LoftQ initialization (rank 4) of the model quantized to
// 2 bits (RTN, group 32) on all seven projections, re-expressed so that the
// files exercise what PEFT must get right: lora_alpha / r = 0.75 (B divided
// by 0.75, so ΔW is unchanged), and every down_proj truncated to rank 2 with
// scale 0.5 (rank_pattern and alpha_pattern entries).
#include <iostream>
#include <memory>
#include <string>

#include "worker/adapters/lora.h"
#include "worker/model/llama.h"
#include "worker/pipeline/export.h"
#include "worker/pipeline/stages.h"

namespace qwha::pipeline {
namespace {

int Fail(const absl::Status& st) {
  std::cerr << "make_peft_fixture: " << st << "\n";
  return 1;
}

int Main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: make_peft_fixture MODEL_DIR OUT_DIR BASE_MODEL_NAME\n";
    return 2;
  }
  auto model = model::LoadModel(argv[1], torch::kCPU, torch::kFloat32);
  if (!model.ok()) return Fail(model.status());
  quant::QuantConfig qcfg;
  qcfg.bits = 2;
  qcfg.group_size = 32;
  auto originals = QuantizeModel(**model, qcfg, {}, AllTargetModules());
  if (!originals.ok()) return Fail(originals.status());
  adapters::AdapterConfig acfg;
  acfg.type = adapters::AdapterType::kLoftq;
  acfg.rank = 4;
  auto reports = AttachAdapters(**model, acfg, *originals, {});
  if (!reports.ok()) return Fail(reports.status());

  using torch::indexing::Slice;
  for (model::LinearSlot* slot : (*model)->LinearSlots()) {
    const auto* loftq = dynamic_cast<const adapters::LoraAdapter*>(slot->adapter());
    auto state = loftq->StateDict();
    torch::Tensor a = state.at("lora_A").detach();
    torch::Tensor b = state.at("lora_B").detach() * loftq->scale();
    const bool down = slot->name().find("down_proj") != std::string::npos;
    const int64_t r = down ? 2 : loftq->rank();
    const double scale = down ? 0.5 : 0.75;
    auto lora = std::make_unique<adapters::LoraAdapter>(
        adapters::AdapterType::kLora, slot->out_features(), slot->in_features(), r, scale,
        a.index({Slice(0, r)}).clone(), (b.index({Slice(), Slice(0, r)}) / scale).clone());
    if (absl::Status st = slot->AttachAdapter(std::move(lora)); !st.ok()) return Fail(st);
  }
  if (absl::Status st = ExportPeftAdapter(**model, argv[3], argv[2]); !st.ok()) return Fail(st);
  std::cout << "wrote " << argv[2] << "\n";
  return 0;
}

}  // namespace
}  // namespace qwha::pipeline

int main(int argc, char** argv) { return qwha::pipeline::Main(argc, argv); }
