//! SGD with momentum and weight decay, PyTorch's formulation (no dampening,
//! no Nesterov): d = grad + wd * p; buf = m * buf + d (buf = d at the first
//! step); p -= lr * buf. Written out rather than taken from `tch::nn::Optimizer`
//! because checkpoints must hold the momentum buffers by parameter name; the
//! update itself is PyTorch's fused kernel (`torch._fused_sgd_`), one pass
//! over all parameters instead of five elementwise ops per parameter.
//!
//! Gradients are handed in rather than read from `.grad`: the step gets them
//! from `torch.autograd.grad` semantics ([`Sgd::backward_step`]), which
//! allocates them fresh, so there is nothing to zero and nothing to
//! accumulate (PyTorch's `zero_grad(set_to_none=True)`).

use tch::Tensor;

use crate::model::torch_ext;

pub struct Sgd {
    /// Parameter names, in name order, and the parameters in the same order.
    names: Vec<String>,
    params: Vec<Tensor>,
    /// One momentum buffer per parameter, allocated at the first step.
    buffers: Option<Vec<Tensor>>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(
        params: impl IntoIterator<Item = (String, Tensor)>,
        momentum: f64,
        weight_decay: f64,
    ) -> Self {
        let mut named: Vec<(String, Tensor)> = params
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params) = named.into_iter().unzip();
        Self {
            names,
            params,
            buffers: None,
            momentum,
            weight_decay,
        }
    }

    /// Backward pass of `loss` to every parameter, then one step; none at
    /// all when `skip_if` (a scalar on the device) is non-zero.
    pub fn backward_step(
        &mut self,
        loss: &Tensor,
        lr: f64,
        skip_if: Option<&Tensor>,
    ) -> anyhow::Result<()> {
        let grads = self.gradients(loss)?;
        self.step(lr, &grads, skip_if)
    }

    /// The gradients of `loss` for every parameter, in name order (freshly
    /// allocated, as `torch.autograd.grad`), for a caller that combines
    /// them (the all-reduce of data-parallel training) before [`Sgd::step`].
    pub fn gradients(&self, loss: &Tensor) -> anyhow::Result<Vec<Tensor>> {
        Ok(Tensor::f_run_backward(&[loss], &self.params, false, false)?)
    }

    /// One update with `grads[i]` the gradient of the i-th parameter in
    /// name order (see [`Sgd::gradients`]); none at all when `skip_if` (a
    /// scalar on the device) is non-zero.
    pub fn step(
        &mut self,
        lr: f64,
        grads: &[Tensor],
        skip_if: Option<&Tensor>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            grads.len() == self.params.len(),
            "{} gradients for {} parameters",
            grads.len(),
            self.params.len()
        );
        if let Some(i) = grads.iter().position(|g| !g.defined()) {
            anyhow::bail!(
                "parameter {} got no gradient: it does not take part in the loss",
                self.names[i]
            );
        }
        let first_step = self.buffers.is_none();
        let buffers = self
            .buffers
            .get_or_insert_with(|| self.params.iter().map(Tensor::zeros_like).collect());
        tch::no_grad(|| {
            let update = torch_ext::SgdUpdate {
                weight_decay: self.weight_decay,
                momentum: self.momentum,
                lr,
                first_step,
            };
            torch_ext::fused_sgd(&self.params, grads, buffers, update, skip_if)
        })?;
        Ok(())
    }

    /// Momentum buffers by parameter name, for checkpoints.
    pub fn state(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.names.iter().zip(self.buffers.iter().flatten())
    }

    /// Restores buffers saved by [`Sgd::state`]: all of them, or none (a
    /// checkpoint written before the first step).
    pub fn load_state(
        &mut self,
        buffers: impl IntoIterator<Item = (String, Tensor)>,
    ) -> anyhow::Result<()> {
        let mut loaded: Vec<Option<Tensor>> = self.params.iter().map(|_| None).collect();
        for (name, t) in buffers {
            let i =
                self.names.iter().position(|n| *n == name).ok_or_else(|| {
                    anyhow::anyhow!("optimizer state for unknown parameter {name}")
                })?;
            let p = &self.params[i];
            anyhow::ensure!(
                p.size() == t.size(),
                "optimizer state for {name} has shape {:?}, parameter {:?}",
                t.size(),
                p.size()
            );
            // In the parameter's own device and layout (channels-last
            // convolutions stay so).
            let buf = p.zeros_like();
            tch::no_grad(|| buf.shallow_clone().f_copy_(&t))?;
            loaded[i] = Some(buf);
        }
        if loaded.iter().all(Option::is_none) {
            self.buffers = None;
            return Ok(());
        }
        if let Some(i) = loaded.iter().position(Option::is_none) {
            anyhow::bail!("optimizer state misses parameter {}", self.names[i]);
        }
        self.buffers = Some(loaded.into_iter().flatten().collect());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn matches_pytorch_sgd_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut sgd = Sgd::new([("w".to_string(), p.shallow_clone())], 0.9, 0.1);
        // loss = sum(p^2) -> grad = 2p.
        for _ in 0..2 {
            let loss = (&p * &p).sum(Kind::Float);
            sgd.backward_step(&loss, 0.5, None).unwrap();
        }
        assert!(
            !p.grad().defined(),
            "gradients are not accumulated in .grad"
        );
        // Step 1: d = 2p + 0.1p = 2.1p = [2.1, -4.2]; buf = d; p = [1-1.05, -2+2.1] = [-0.05, 0.1].
        // Step 2: d = 2.1 * [-0.05, 0.1] = [-0.105, 0.21]; buf = 0.9*[2.1,-4.2] + d = [1.785, -3.57];
        //         p = [-0.05 - 0.8925, 0.1 + 1.785] = [-0.9425, 1.885].
        let v: Vec<f32> = p.detach().try_into().unwrap();
        assert!(
            (v[0] + 0.9425).abs() < 1e-5 && (v[1] - 1.885).abs() < 1e-5,
            "{v:?}"
        );
        let (name, buf) = sgd.state().next().unwrap();
        assert_eq!(name, "w");
        let b: Vec<f32> = buf.try_into().unwrap();
        assert!((b[0] - 1.785).abs() < 1e-5);
    }
}
