#include <iomanip>
#include <sstream>

#include "normlab/core/autograd.h"
#include "normlab/nn/layers.h"

namespace nl::nn {

std::string summary(Sequential& model, const Shape& input) {
  bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  std::ostringstream os;
  os << std::left << std::setw(6) << "layer" << std::setw(58) << "type" << std::setw(18) << "output"
     << std::right << std::setw(8) << "params" << std::setw(8) << "RF"
     << "\n";
  os << std::string(98, '-') << "\n";
  Tensor h = Tensor::zeros(input);
  Module::ReceptiveField rf;
  for (const auto& [name, m] : model.children()) {
    h = m->forward(h);
    m->receptive_field(rf);
    std::ostringstream shape;
    shape << h.shape();
    std::string type = m->describe();
    if (type.size() > 56) type = type.substr(0, 53) + "...";
    os << std::left << std::setw(6) << name << std::setw(58) << type << std::setw(18) << shape.str()
       << std::right << std::setw(8) << m->parameter_count() << std::setw(8)
       << (rf.global ? std::string("global") : std::to_string(rf.size)) << "\n";
  }
  os << std::string(98, '-') << "\n";
  os << "total parameters: " << model.parameter_count() << "\n";
  model.train(was_training);
  return os.str();
}

}  // namespace nl::nn
