//! Named weights into variable stores (tensors keyed by torchvision-style
//! names). The model sees tensors, not files: reading them is
//! [`crate::formats::safetensors`].

use std::collections::HashMap;
use std::path::Path;

use tch::nn;
use tch::Tensor;

/// Copies `tensors[prefix + name]` into every variable `name` of `vs`
/// (trainable or not, BN running statistics included), checking shapes.
/// `file` names the source in messages.
pub fn copy_named(
    vs: &nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    file: &Path,
) -> anyhow::Result<()> {
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            let key = format!("{prefix}{name}");
            let src = tensors
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("{}: missing tensor {key}", file.display()))?;
            anyhow::ensure!(
                src.size() == var.size(),
                "{}: {key} has shape {:?}, the model {:?}",
                file.display(),
                src.size(),
                var.size()
            );
            var.shallow_clone().f_copy_(src)?;
        }
        Ok(())
    })
}
