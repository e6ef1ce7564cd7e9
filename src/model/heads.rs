//! The heads MoCo-v2 and the geo-location task put on top of the backbone.
//!
//! Names follow the reference code so checkpoints map one-to-one: the
//! projection MLP replaces torchvision's `fc` as `Sequential(Linear, ReLU,
//! Linear)` (`fc.0.*`, `fc.2.*`); the geo head is `Sequential(ReLU,
//! Linear)` (`geo_head.1.*`).

use tch::nn::{self, Module};
use tch::Tensor;

/// PyTorch's default Linear initialisation (uniform +-1/sqrt(fan_in) for
/// weight and bias), so training starts where the reference starts.
pub fn torch_linear(p: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    let bound = 1.0 / (c_in as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        p,
        c_in,
        c_out,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// Linear(hidden, hidden) -> ReLU -> Linear(hidden, dim), no BN (MoCo-v2).
#[derive(Debug)]
pub struct ProjectionHead {
    hidden: nn::Linear,
    out: nn::Linear,
}

impl ProjectionHead {
    /// `p` is the `fc` path of the encoder.
    pub fn new(p: &nn::Path, feature_dim: i64, dim: i64) -> Self {
        Self {
            hidden: torch_linear(p / 0, feature_dim, feature_dim),
            out: torch_linear(p / 2, feature_dim, dim),
        }
    }
}

impl Module for ProjectionHead {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.hidden).relu().apply(&self.out)
    }
}

/// ReLU -> Linear(dim, classes), applied to the query's projection BEFORE
/// its L2 normalisation.
#[derive(Debug)]
pub struct GeoHead {
    linear: nn::Linear,
}

impl GeoHead {
    /// `p` is the `geo_head` path.
    pub fn new(p: &nn::Path, dim: i64, classes: i64) -> Self {
        Self {
            linear: torch_linear(p / 1, dim, classes),
        }
    }
}

impl Module for GeoHead {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.relu().apply(&self.linear)
    }
}

/// The classifier of the evaluation protocol: Linear(features, classes)
/// with weights N(0, 0.01) and bias 0 (the MoCo linear-probe code).
pub fn probe_linear(p: nn::Path, features: i64, classes: i64) -> nn::Linear {
    nn::linear(
        p,
        features,
        classes,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}
