#pragma once
// Row-major Eigen views over raw kernel pointers. kernels/cpu is the only place Eigen is used.
#include <Eigen/Core>

namespace nl::cpu {
using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapR = Eigen::Map<MatR>;
using CMapR = Eigen::Map<const MatR>;
using VecMap = Eigen::Map<Eigen::VectorXf>;
using CVecMap = Eigen::Map<const Eigen::VectorXf>;
}  // namespace nl::cpu
