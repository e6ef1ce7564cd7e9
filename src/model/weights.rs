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
    copy_mapped(
        vs,
        |name| Some(format!("{prefix}{name}")),
        |key| tensors.get(key),
        file,
    )?;
    Ok(())
}

/// Copies `lookup(key)` into every variable `name` of `vs` for which
/// `key_of(name)` gives a `key` (the others are left as they are),
/// checking shapes; returns how many were copied. `file` names the source
/// in messages (`missing tensor KEY`, `KEY has shape ...`).
pub fn copy_mapped<'a>(
    vs: &nn::VarStore,
    key_of: impl Fn(&str) -> Option<String>,
    lookup: impl Fn(&str) -> Option<&'a Tensor>,
    file: &Path,
) -> anyhow::Result<usize> {
    tch::no_grad(|| {
        let mut copied = 0;
        for (name, var) in vs.variables() {
            let Some(key) = key_of(&name) else {
                continue;
            };
            let src = lookup(&key)
                .ok_or_else(|| anyhow::anyhow!("{}: missing tensor {key}", file.display()))?;
            anyhow::ensure!(
                src.size() == var.size(),
                "{}: {key} has shape {:?}, the model {:?}",
                file.display(),
                src.size(),
                var.size()
            );
            var.shallow_clone().f_copy_(src)?;
            copied += 1;
        }
        Ok(copied)
    })
}
