//! Reading `.safetensors` files (the weights of checkpoints, exports and
//! classifiers) into named tensors.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use tch::Tensor;

/// Every tensor of a safetensors file, by name; errors name the file.
pub fn read_safetensors(file: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(file)
        .with_context(|| format!("{}: cannot read weights", file.display()))?
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unreadable_file_is_named() {
        let err = super::read_safetensors(std::path::Path::new("no/such.safetensors"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no/such.safetensors: cannot read weights");
    }
}
