//! SGD with momentum and weight decay, PyTorch's formulation (no dampening,
//! no Nesterov): d = grad + wd * p; buf = m * buf + d (buf = d at the first
//! step); p -= lr * buf. Written out rather than taken from `tch::nn::Optimizer`
//! because checkpoints must hold the momentum buffers by parameter name.

use std::collections::BTreeMap;

use tch::Tensor;

pub struct Sgd {
    /// Parameters by name, in name order.
    params: Vec<(String, Tensor)>,
    /// Momentum buffer of each parameter, once it has had a step.
    buffers: BTreeMap<String, Tensor>,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Sgd {
    pub fn new(
        params: impl IntoIterator<Item = (String, Tensor)>,
        momentum: f64,
        weight_decay: f64,
    ) -> Self {
        let mut params: Vec<(String, Tensor)> = params
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            params,
            buffers: BTreeMap::new(),
            momentum,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (name, p) in &self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let d = if self.weight_decay != 0.0 {
                    &g + p * self.weight_decay
                } else {
                    g.shallow_clone()
                };
                let buf = match self.buffers.get(name) {
                    Some(b) => {
                        let _ = b.shallow_clone().g_mul_scalar_(self.momentum).g_add_(&d);
                        b.shallow_clone()
                    }
                    None => {
                        let b = d.detach().copy();
                        self.buffers.insert(name.clone(), b.shallow_clone());
                        b
                    }
                };
                let _ = p.shallow_clone().g_sub_(&(&buf * lr));
            }
        });
    }

    /// Momentum buffers by parameter name, for checkpoints.
    pub fn state(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.buffers.iter()
    }

    /// Restores buffers saved by [`Sgd::state`].
    pub fn load_state(
        &mut self,
        buffers: impl IntoIterator<Item = (String, Tensor)>,
    ) -> anyhow::Result<()> {
        for (name, t) in buffers {
            let p = self
                .params
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| anyhow::anyhow!("optimizer state for unknown parameter {name}"))?;
            anyhow::ensure!(
                p.1.size() == t.size(),
                "optimizer state for {name} has shape {:?}, parameter {:?}",
                t.size(),
                p.1.size()
            );
            self.buffers.insert(name, t.to_device(p.1.device()));
        }
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
            sgd.zero_grad();
            let loss = (&p * &p).sum(Kind::Float);
            loss.backward();
            sgd.step(0.5);
        }
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
